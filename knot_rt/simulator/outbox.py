"""The outbox of a simulated device: its events, kept in order until they are answered.

Delivery guarantee, device side (``station-protocol.md``; ``vehicle-protocol.md``
has the same): every CALL but ``boot`` is an *event*. It enters the outbox
when it happens at the device, connected or not, and leaves it only when the
backend answers it for good: a RESULT, or an ERROR other than ``InternalError``.
What is still here after a reconnect is sent again, in order and with the same
id, before anything new (``session.py`` does the sending).

Call ids are ``<token>-<boot counter>-<sequence>``: ``token`` is random per
device instance, so ids stay unique across reboots, reconnects and restarts of
the simulator against the same backend (which remembers ids for days and would
answer a reused id without applying the event). The boot counter grows per
connection and the sequence starts again at 1 with each boot (the boot CALL
takes the first id).

Choices:

- A dict keyed by id: insertion order is the send order, and an answer finds
  its event in O(1).
- A :class:`Delivery` encodes its frame once, so a resend is byte-identical
  (the backend compares a repeated id's frame).
- A :class:`Delivery` is also what the code that raised the event waits on
  (``await delivery.wait()``): one ``actors.reply.OneShot`` per event, settled once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

from actors.reply import OneShot
from protocols import station as st


class Delivery:
    """One event in the outbox; ``await delivery.wait()`` until it is answered."""

    __slots__ = ("_answered", "action", "error", "frame", "id", "internal_errors", "payload", "result", "sends")

    def __init__(self, id: str, action: str, payload: st.Payload, frame: str) -> None:
        self.id = id
        self.action = action
        self.payload = payload
        self.frame = frame  # written once: a resend is byte-identical
        self.sends = 0
        self.internal_errors = 0
        self.result: dict[str, Any] | None = None
        self.error: st.Error | None = None
        self._answered: OneShot[None] = OneShot()

    @property
    def answered(self) -> bool:
        return self._answered.settled

    @property
    def acknowledged(self) -> bool:
        return self.result is not None

    async def wait(self) -> Delivery:
        await self._answered.wait()
        return self

    def _finish(self, result: dict[str, Any] | None, error: st.Error | None) -> None:
        self.result, self.error = result, error
        self._answered.resolve(None)

    def __repr__(self) -> str:
        return f"<Delivery {self.action} {self.id} sends={self.sends} answered={self.answered}>"


#: Writes one CALL frame of a device protocol: ``(id, action, payload) -> text``.
CallWriter = Callable[[str, str, st.Payload], str]


class Outbox:
    """The unanswered events of one device, oldest first, and the ids of its CALLs."""

    __slots__ = ("_boots", "_events", "_sequence", "_token", "_write")

    def __init__(self, write: CallWriter = st.call) -> None:
        """``write`` encodes an event's CALL frame (its protocol's ``call``; the station's by default)."""
        self._write = write
        self._token = secrets.token_hex(4)
        self._boots = 0
        self._sequence = 0
        self._events: dict[str, Delivery] = {}

    @property
    def boots(self) -> int:
        """Boots so far (the second part of call ids)."""
        return self._boots

    def next_boot(self) -> None:
        """A new connection: ids go on under the next boot number, from sequence 1."""
        self._boots += 1
        self._sequence = 0

    def next_id(self) -> str:
        self._sequence += 1
        return f"{self._token}-{self._boots}-{self._sequence}"

    def add(self, action: str, payload: st.Payload) -> Delivery:
        id = self.next_id()
        delivery = Delivery(id, action, payload, self._write(id, action, payload))
        self._events[delivery.id] = delivery
        return delivery

    def get(self, id: str) -> Delivery | None:
        return self._events.get(id)

    def settle(self, delivery: Delivery, *, result: dict[str, Any] | None = None,
               error: st.Error | None = None) -> None:
        """Answered for good: the event leaves the outbox and its waiters wake."""
        del self._events[delivery.id]
        delivery._finish(result, error)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(list(self._events.values()))

    def __len__(self) -> int:
        return len(self._events)
