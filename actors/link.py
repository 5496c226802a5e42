"""A device's live connection as its actor sees it: stations and free-floating vehicles alike.

The gateway (``knot_rt/stations/gateway.py``, ``knot_rt/vehicles/gateway.py``)
holds the socket; the device's actor gets this small interface to answer the
device's CALLs and to send its own. Both device protocols share the framing
(OCPP-J), so one interface serves both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from actors.reply import OneShot
from protocols.station import Call, Payload, UnlockStatus

logger = logging.getLogger(__name__)


class LinkClosed(Exception):
    """The connection is gone."""


class CallTimeout(Exception):
    """No answer in time."""


class CallRefused(Exception):
    """The device answered with an ERROR."""


class DeviceLink(Protocol):
    """One live connection of a device (held by the gateway)."""

    booted: bool

    async def send(self, text: str) -> None: ...

    async def call(self, action: str, payload: Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Send a CALL and return the RESULT payload. Raises ``LinkClosed``, ``CallTimeout`` or ``CallRefused``."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class DeviceLinks(Protocol):
    """The current connection of each device of one kind, by its id."""

    def current(self, device_id: int) -> DeviceLink | None: ...


async def answer(link: DeviceLink, text: str) -> None:
    """Answer the device's CALL; a link gone meanwhile is no fault (the device sends the CALL again)."""
    try:
        await link.send(text)
    except LinkClosed:
        logger.info("device link closed before its answer was sent")


# Messages from the gateway to the device's actor -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Attached:
    """The gateway has a new connection of the device (the older one is already replaced)."""

    link: DeviceLink


@dataclass(frozen=True, slots=True)
class Detached:
    """The connection is gone (ignored unless it is the actor's current one)."""

    link: DeviceLink


@dataclass(frozen=True, slots=True)
class Incoming:
    """A CALL of the device, already parsed; the actor answers it on the link (RESULT or ERROR)."""

    link: DeviceLink
    call: Call


# The backend's commands to a device -----------------------------------------------------------


class Failure(StrEnum):
    OFFLINE = "offline"  # not connected (HTTP 503, code 50)
    TIMEOUT = "timeout"  # no answer in time (HTTP 504, code 40)
    REJECTED = "rejected"  # the device refused or answered an ERROR
    INVALID = "invalid"  # the command does not fit the device (HTTP 400)
    UNAVAILABLE = "unavailable"  # the backend could not record the command (database down; HTTP 503, code 48)


@dataclass(frozen=True, slots=True)
class CommandFailed:
    failure: Failure
    message: str


class PendingCommand(OneShot[dict[str, Any] | CommandFailed]):
    """A command sent to a device; ``await wait()`` gives its RESULT payload or a ``CommandFailed``.

    A typed ``OneShot`` that carries the command's ``action`` and the id it
    carries (``unlock_id``: an unlock's or a lock's, echoed by the device's
    report). It never fails: a command that did not go through is a value
    (``CommandFailed``), which the actor ``resolve``s once.
    """

    __slots__ = ("action", "unlock_id")

    def __init__(self, action: str, unlock_id: int | None = None) -> None:
        super().__init__()
        self.action = action
        self.unlock_id = unlock_id


async def send_command(
    link: DeviceLink, pending: PendingCommand, payload: Payload, timeout: float, device: str,  # noqa: ASYNC109
) -> None:
    """Send ``pending``'s CALL over ``link`` and resolve it with the RESULT or why it failed (a RESULT
    with ``"status": "rejected"`` is a refusal). Cancelled (the actor stops): resolved as offline, so
    nobody is left waiting. ``device`` names it in the messages ("station 7", "vehicle 12")."""
    try:
        outcome: dict[str, Any] | CommandFailed = await link.call(pending.action, payload, timeout)
    except LinkClosed:
        outcome = CommandFailed(Failure.OFFLINE, f"{device} went offline")
    except CallTimeout:
        outcome = CommandFailed(Failure.TIMEOUT, f"{device} did not answer in time")
    except CallRefused as refused:
        outcome = CommandFailed(Failure.REJECTED, f"{device} refused: {refused}")
    except TypeError as mismatch:  # a payload that is not the action's: a caller's mistake
        outcome = CommandFailed(Failure.INVALID, str(mismatch))
    except BaseException:
        pending.resolve(CommandFailed(Failure.OFFLINE, f"{device} is restarting"))
        raise
    if isinstance(outcome, dict) and outcome.get("status") == UnlockStatus.REJECTED.value:
        outcome = CommandFailed(Failure.REJECTED, f"{device} rejected the {pending.action}")
    pending.resolve(outcome)
