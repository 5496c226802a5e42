"""A report's chat channel: one actor per report, the one writer of its messages.

The actor holds what is live about a conversation between a rider (side
``user``) and the support agents of the report's network (side ``support``):

- who is typing on each side, until when (``TYPING_TTL`` seconds after their
  last ``typing`` frame);
- the read marker of each side (the highest message id that side has read)
  and its unread count (messages of the other side above that marker);
- the last message id.

Every message goes through ``handle``, one at a time, and the store writes it
with its feed events in one unit of work (``message.created`` on the report's
topic, ``report.updated`` where the contract wants it) before the poster is
answered. Since the actor writes one message after the other and each unit of
work holds the topic's lock until its events are delivered, the message ids,
the topic's sequence numbers and what both sides receive are one order.

Choices:

- The database is the truth for the report's status: the store decides, in
  the message's transaction (the report row locked), whether a resolved report
  is reopened by this message or refuses it (``Refused``). So the agents'
  routes (assign, resolve, reopen) need not pass through this actor; the actor
  only caches what it alone writes (messages, read markers).
- The state is rebuilt from the database on every start (``store.load``):
  after a crash nothing is lost, because nothing is answered before its commit.
- ``typing`` is ephemeral: handed to ``store.typing``, which delivers it to the
  topic's live subscribers without a sequence number, never written. A side's
  typing is forgotten when it posts, and re-announced at most once a second
  (``TYPING_REPEAT``) however many frames its clients send.
- ``idle_after``: an actor that handled no message for that long stops; the next
  use starts a fresh one from the database (costs one read).

I/O comes in as :class:`ChatStore`; this module imports only Trio and ``protocols``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import trio

from actors.runtime import Actor
from protocols.feed import TYPING_TTL

log = logging.getLogger(__name__)

#: At most one ``typing`` event per side per this many seconds (the others only extend ``until``).
TYPING_REPEAT = 1.0
#: Message text: from 1 to this many characters.
MAX_BODY = 2000


class Side(StrEnum):
    USER = "user"
    SUPPORT = "support"

    @property
    def other(self) -> Side:
        return Side.SUPPORT if self is Side.USER else Side.USER


@dataclass(frozen=True, slots=True)
class ChatState:
    """What the actor starts from (``store.load``): markers and counts per side."""

    report_id: int
    user_id: int
    network_id: int | None
    last_message_id: int = 0
    read_up_to: dict[Side, int] = field(default_factory=lambda: {Side.USER: 0, Side.SUPPORT: 0})
    unread: dict[Side, int] = field(default_factory=lambda: {Side.USER: 0, Side.SUPPORT: 0})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: int
    report_id: int
    side: Side
    author_id: int | None
    body: str | None
    image_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Refused:
    """A message refused by the store: the report is resolved past its reopening window (409/46)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ChatView:
    """The channel as its actor sees it now (the answer of ``GetView``, ``MarkRead``, ``Typing``)."""

    report_id: int
    last_message_id: int
    read_up_to: dict[Side, int]
    unread: dict[Side, int]
    typing_until: dict[Side, int]  # ms epoch, only the sides typing now


@dataclass(frozen=True, slots=True)
class Posted:
    message: ChatMessage
    view: ChatView


class ChatStore(Protocol):
    """The chat actor's I/O (``knot_rt.support.store.PgChatStore``)."""

    async def load(self, report_id: int) -> ChatState | None:
        """The channel's state from the database; None for an unknown report."""

    async def append(
        self, state: ChatState, side: Side, author_id: int | None, body: str | None, image_id: int | None,
        unread: dict[Side, int],
    ) -> ChatMessage | Refused:
        """Write the message and its feed events in one unit of work; ``unread`` are the counts after it."""

    async def mark_read(self, state: ChatState, side: Side, up_to: int) -> int:
        """Move ``side``'s read marker to ``up_to`` and publish ``message.read``; returns that side's unread
        count after it."""

    def typing(self, report_id: int, side: Side, until_ms: int) -> None:
        """Tell the topic's live subscribers, without storing it."""


# --------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Post:
    side: Side
    author_id: int | None
    body: str | None = None
    image_id: int | None = None


@dataclass(frozen=True, slots=True)
class MarkRead:
    side: Side
    message_id: int


@dataclass(frozen=True, slots=True)
class Typing:
    side: Side


@dataclass(frozen=True, slots=True)
class GetView:
    pass


@dataclass(frozen=True, slots=True)
class Crash:
    """Forces a crash (tests of supervision)."""

    reason: str = "forced crash"


ChatMessageIn = Post | MarkRead | Typing | GetView | Crash
ChatReply = Posted | Refused | ChatView


class UnknownReport(LookupError):
    """The actor was started for a report that does not exist (its start fails)."""


class ChatActor(Actor[ChatMessageIn, ChatReply]):
    def __init__(self, report_id: int, store: ChatStore, *, idle_after: float = math.inf) -> None:
        self.report_id = report_id
        self.store = store
        self.idle_after = idle_after
        self.state = ChatState(report_id, 0, None)
        self.typing_until: dict[Side, float] = {}  # epoch seconds
        self._announced: dict[Side, float] = {}  # trio clock of the last typing event per side
        self._last_used = 0.0

    async def on_start(self) -> None:
        loaded = await self.store.load(self.report_id)
        if loaded is None:
            raise UnknownReport(f"no report {self.report_id}")
        self.state = loaded
        self._last_used = trio.current_time()
        if self.idle_after < math.inf:
            self.background.start_soon(self._stop_when_idle)

    async def _stop_when_idle(self) -> None:
        while True:
            await trio.sleep_until(self._last_used + self.idle_after)
            if trio.current_time() >= self._last_used + self.idle_after:
                log.debug("chat %d: idle, stopping", self.report_id)
                self.ref.stop_nowait()
                return

    def view(self) -> ChatView:
        now = time.time()
        return ChatView(
            self.report_id, self.state.last_message_id, dict(self.state.read_up_to), dict(self.state.unread),
            {side: int(until * 1000) for side, until in self.typing_until.items() if until > now},
        )

    async def handle(self, message: ChatMessageIn) -> ChatReply:
        self._last_used = trio.current_time()
        match message:
            case Post(side, author_id, body, image_id):
                return await self._post(side, author_id, body, image_id)
            case MarkRead(side, message_id):
                return await self._mark_read(side, message_id)
            case Typing(side):
                return self._typing(side)
            case GetView():
                return self.view()
            case Crash(reason):
                raise RuntimeError(reason)
        raise TypeError(f"unknown message {message!r}")

    async def _post(self, side: Side, author_id: int | None, body: str | None, image_id: int | None) -> ChatReply:
        state = self.state
        # The author has read what they answer, and their own message; the other side has one more unread.
        unread = {side: 0, side.other: state.unread[side.other] + 1}
        written = await self.store.append(state, side, author_id, body, image_id, unread)
        if isinstance(written, Refused):
            return written
        self.state = replace(
            state, last_message_id=written.id, read_up_to={**state.read_up_to, side: written.id}, unread=unread,
        )
        self.typing_until.pop(side, None)
        self._announced.pop(side, None)
        return Posted(written, self.view())

    async def _mark_read(self, side: Side, message_id: int) -> ChatView:
        state = self.state
        up_to = min(message_id, state.last_message_id)
        if up_to > state.read_up_to[side]:
            unread = await self.store.mark_read(state, side, up_to)
            self.state = replace(
                state, read_up_to={**state.read_up_to, side: up_to}, unread={**state.unread, side: unread},
            )
        return self.view()

    def _typing(self, side: Side) -> ChatView:
        now = time.time()
        self.typing_until[side] = now + TYPING_TTL
        clock = trio.current_time()
        last = self._announced.get(side)
        if last is None or clock - last >= TYPING_REPEAT:
            self._announced[side] = clock
            self.store.typing(self.report_id, side, int(self.typing_until[side] * 1000))
        return self.view()
