"""The badge readers of one station: who waits for a badge where, and until when.

A rider links a badge by asking for a link at a reader (``POST /badges/link``),
then showing the badge there within the link window (60 s by default). The
pending link lives in the station's actor (``actors/station.py``), which owns
the reader; this module is its pure bookkeeping plus the messages and the I/O
interface the actor uses for badges. No I/O and no clock here: times are given.

A reader is named by a spot number on stations with one reader per spot (v6),
or by ``None`` for a station with one reader (v5). A ``badge-rfid`` event
names the spot it was read at (v6) or none (v5); a link waiting at the
station's one reader takes a badge read anywhere on that station.

Choices:

- One pending link per reader: a second one is refused (``BadgeReaderBusy``,
  HTTP 409 code 38) rather than replacing the first, so one rider cannot
  silently steal another's window at a shared reader.
- A link is consumed by the first badge read at its reader, linked or not
  (a badge taken by another account fails the link): the rider asks again.
- Pending links are memory only. An actor that restarts forgets them; their
  riders get no ``badge.link_failed`` and simply ask again (the app shows the
  window's end anyway). Writing them would cost a row per attempt for a
  60-second state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

DEFAULT_LINK_SECONDS = 60.0


class LinkOutcome(StrEnum):
    LINKED = "linked"  # the badge is now the rider's (or already was)
    TAKEN = "taken"  # the badge belongs to another account


class LinkFailure(StrEnum):
    """The ``reason`` of a ``badge.link_failed`` event."""

    TIMEOUT = "timeout"  # no badge at the reader within the link window
    TAKEN = "taken"  # the badge shown belongs to another account
    UNAVAILABLE = "unavailable"  # the link could not be recorded (database away)


class BadgeBook(Protocol):
    """What the station actor needs of the badges domain (``knot_rt/badges/``)."""

    async def link(self, user_id: int, name: str, uid: str) -> LinkOutcome:
        """Link the badge ``uid`` to the user with its ``badge.linked`` event, in one unit of work."""
        ...

    async def link_failed(self, user_id: int, name: str, reason: LinkFailure) -> None:
        """Tell the user (``badge.link_failed``) that the link named ``name`` did not happen."""
        ...

    async def badge_presented(self, station_id: int, spot: int | None, uid: str) -> None:
        """A badge shown at a reader with no link waiting: a rider's unlock.

        Run in the actor's background (never awaited inside ``handle``), because
        it asks this same station actor to unlock and to send its feedback.
        """
        ...


# --------------------------------------------------------------------------
# Messages (part of the station actor's ``StationMessage``)


@dataclass(frozen=True, slots=True)
class StartBadgeLink:
    """Wait for a badge of ``user_id`` at a reader; ``spot`` None for the station's one reader.

    Answered with a ``PendingCommand`` (the ``badge-feedback`` LINK_STARTED sent to the station),
    a ``CommandFailed`` (offline, no such spot) or ``BadgeReaderBusy``.
    """

    user_id: int
    name: str
    spot: int | None = None


@dataclass(frozen=True, slots=True)
class BadgeLinkExpired:
    """The link window of ``link`` ended (the actor's own timer)."""

    link: PendingLink


@dataclass(frozen=True, slots=True)
class BadgeLinkAbandoned:
    """The station did not take ``link``'s LINK_STARTED: its caller was told so, the reader is free again."""

    link: PendingLink


@dataclass(frozen=True, slots=True)
class BadgeReaderBusy:
    """The reply to ``StartBadgeLink`` when a link already waits at that reader (HTTP 409 code 38)."""

    spot: int | None


# --------------------------------------------------------------------------
# Bookkeeping


@dataclass(frozen=True, slots=True, eq=False)
class PendingLink:
    """A link waiting at a reader until ``deadline`` (``trio.current_time()`` units).

    Compared by identity: the timer of a link consumed and asked again at the same
    reader never expires the new one.
    """

    user_id: int
    name: str
    spot: int | None
    deadline: float


class BadgeReaders:
    """The links waiting at the readers of one station."""

    def __init__(self, window: float = DEFAULT_LINK_SECONDS) -> None:
        self.window = window
        self._waiting: dict[int | None, PendingLink] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self, user_id: int, name: str, spot: int | None, now: float) -> PendingLink | None:
        """A new link at reader ``spot``; None when one already waits there.

        A link past its deadline still holds its reader until its expiry is handled (then its
        rider is told it failed): an instant later the reader is free.
        """
        if spot in self._waiting:
            return None
        link = PendingLink(user_id, name, spot, now + self.window)
        self._waiting[spot] = link
        return link

    def take(self, spot: int | None, now: float) -> PendingLink | None:
        """The link a badge read at ``spot`` completes, removed; None when no link waits there.

        A badge read at a spot completes the link of that spot, else the link of the
        station's one reader. A link past its deadline completes nothing (its timer fails it).
        """
        for reader in (spot, None) if spot is not None else (None,):
            link = self._waiting.get(reader)
            if link is not None and link.deadline > now:
                del self._waiting[reader]
                return link
        return None

    def drop(self, link: PendingLink) -> bool:
        """Forget ``link`` if it still waits; False when it was taken (or dropped) already."""
        if self._waiting.get(link.spot) is link:
            del self._waiting[link.spot]
            return True
        return False
