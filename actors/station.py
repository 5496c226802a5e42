"""The station actor: one per station, holding its live state.

It receives the station's CALLs from the gateway (one at a time, in order),
records each event durably before answering, answers a repeated CALL id with the
same RESULT without applying it again, and sends the backend's commands
(``unlock``, ``ping``, ``reboot``, ``refresh``, ``badge-feedback``, ``config``)
to the station over its current link.

Its I/O comes in as three small interfaces: ``StationStore`` (persistence),
``StationLinks`` (the live connection the gateway holds for a station) and
``StationListener`` (feed events, live availability, vehicles), plus the
badges domain's ``BadgeBook`` (``actors/badge_reader.py``: the badge links
waiting at the station's readers). So it runs in a test without a server.

Nothing a station sends can crash it: a frame that does not fit the station
(an unknown spot) is answered with an ERROR. A command that cannot be sent is a
reply (``CommandFailed``), not an exception. A store that fails (the database
is down) does not crash it either: the event is answered ``InternalError``
(nothing was recorded or applied; the station keeps it and sends it again
later), a ``boot`` is refused the same way (the link stays unbooted), and
going offline is applied in memory and logged, the database catching up the
next time this actor starts (``on_start`` reconciles the online flag).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import trio

from actors.badge_reader import (
    DEFAULT_LINK_SECONDS,
    BadgeBook,
    BadgeLinkAbandoned,
    BadgeLinkExpired,
    BadgeReaderBusy,
    BadgeReaders,
    LinkFailure,
    LinkOutcome,
    PendingLink,
    StartBadgeLink,
)
from actors.errors import ActorStopped
from actors.link import (
    Attached,
    CallRefused,
    CallTimeout,
    CommandFailed,
    Detached,
    DeviceLink,
    DeviceLinks,
    Failure,
    Incoming,
    LinkClosed,
    PendingCommand,
    answer,
    send_command,
)
from actors.runtime import Actor
from protocols import station as wire
from protocols.feed import EventName

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Live state, as others see it


@dataclass(frozen=True, slots=True)
class SpotView:
    number: int
    spot_id: int
    vehicle: int | None = None  # the vehicle id the station reads, None when empty
    lock: int | None = None  # 0 open, 1 closed, None unknown
    in_maintenance: bool = False
    is_accessible: bool = True


@dataclass(frozen=True, slots=True)
class VehicleReading:
    vehicle: int
    voltage: int
    battery: int | None


@dataclass(frozen=True, slots=True)
class StationView:
    station_id: int
    cluster_id: int
    enabled: bool
    online: bool
    last_seen_ms: int | None
    spots: tuple[SpotView, ...]
    vehicles: tuple[VehicleReading, ...] = ()
    mainboard: dict[str, Any] | None = None
    connectivity: dict[str, Any] | None = None
    firmware: dict[str, Any] | None = None

    @property
    def total_spots(self) -> int:
        return len(self.spots)

    @property
    def free_spots(self) -> int:
        return sum(1 for s in self.spots if s.vehicle is None and not s.in_maintenance and s.is_accessible)

    @property
    def available_vehicles(self) -> int:
        """Docked, locked vehicles of an online station, in a usable spot."""
        if not self.online:
            return 0
        return sum(
            1 for s in self.spots
            if s.vehicle not in (None, 0) and s.lock == 1 and not s.in_maintenance and s.is_accessible
        )

    def spot(self, number: int) -> SpotView | None:
        for spot in self.spots:
            if spot.number == number:
                return spot
        return None


@dataclass(frozen=True, slots=True)
class FeedItem:
    """The event a recorded station event puts on the station's feed topic."""

    event: EventName
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Released:
    """An ``unlocked``: the vehicle left ``spot``, opened by the command ``unlock_id`` (None: by none)."""

    spot: int
    vehicle: int
    unlock_id: int | None


@dataclass(frozen=True, slots=True)
class Returned:
    """A ``locked`` the backend accepted: the vehicle came back into ``spot`` at ``at_ms`` (station time)."""

    spot: int
    vehicle: int
    at_ms: int


SpotEvent = Released | Returned


@dataclass(frozen=True, slots=True)
class Changes:
    """What an event changes, written with the event in one transaction."""

    spots: tuple[SpotView, ...] = ()
    vehicles: tuple[VehicleReading, ...] = ()
    state: dict[str, Any] | None = None  # the whole `state` payload, kept as the last state
    cause: SpotEvent | None = None  # what the vehicle of a spot did, for its actor (a rent's start or end)


# --------------------------------------------------------------------------
# I/O interfaces


StationLink = DeviceLink
StationLinks = DeviceLinks


class StationStore(Protocol):
    async def load(self, station_id: int) -> StationView | None: ...

    async def record(
        self, station_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        changes: Changes, feed: FeedItem | None = None,
    ) -> dict[str, Any] | None:
        """Record the event, its changes and its feed event once, in one transaction (the feed event
        reaches subscribers after it commits); return the earlier RESULT if the id was seen already."""
        ...

    async def set_online(
        self, station_id: int, online: bool, *, firmware: dict[str, Any] | None = None, feed: FeedItem | None = None,
    ) -> None:
        """Record the online state (and ``feed``, the event of its change, in the same transaction; it reaches
        subscribers after it commits)."""
        ...

    async def next_unlock_id(self) -> int: ...

    async def set_spot_maintenance(self, station_id: int, spot: int, in_maintenance: bool) -> None: ...


class StationListener(Protocol):
    async def station_event(self, view: StationView, event: EventName, data: dict[str, Any]) -> None:
        """A feed event of the station's topic."""
        ...

    async def station_changed(self, before: StationView, after: StationView, cause: SpotEvent | None = None) -> None:
        """Availability, online state or docked vehicles changed (``cause``: a vehicle released or returned)."""
        ...

    async def station_reported(self, before: StationView, after: StationView, payload: wire.Payload) -> None:
        """An event of the station was recorded and applied (never called for a resent id): its payload,
        with the views before and after it. Called from inside the actor: it must not wait on the actor
        (the maintenances opened from faults and alerts are queued, ``knot_rt.maintenance.automatic``)."""
        ...


# --------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Command:
    """A backend CALL to the station; answered with a ``PendingCommand`` or ``CommandFailed``."""

    action: wire.Action
    payload: wire.Payload


@dataclass(frozen=True, slots=True)
class UnlockSpot:
    """Unlock a spot; answered with a ``PendingCommand`` (carrying the unlock id) or ``CommandFailed``.

    ``unlock_id``: the id to send, already recorded by the caller (a rent); None: the actor draws one."""

    spot: int
    unlock_id: int | None = None


@dataclass(frozen=True, slots=True)
class SetSpotMaintenance:
    """A spot goes into maintenance or out of it (a ``locked`` there is then answered DENY); answered
    with the new ``StationView``, or ``CommandFailed`` for a spot the station does not have."""

    spot: int
    in_maintenance: bool


@dataclass(frozen=True, slots=True)
class GetView:
    """Answered with the current ``StationView``."""


@dataclass(frozen=True, slots=True)
class Crash:
    """Forces a crash (chaos drills and tests of supervision)."""

    reason: str = "forced crash"


StationMessage = (
    Attached | Detached | Incoming | Command | UnlockSpot | SetSpotMaintenance | GetView | Crash
    | StartBadgeLink | BadgeLinkExpired | BadgeLinkAbandoned
)


StationReply = StationView | PendingCommand | CommandFailed | BadgeReaderBusy | None


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------
# The actor


class StationActor(Actor[StationMessage, StationReply]):
    def __init__(
        self,
        station_id: int,
        store: StationStore,
        links: StationLinks,
        listener: StationListener,
        *,
        heartbeat_interval: int = wire.DEFAULT_HEARTBEAT_INTERVAL,
        call_timeout: float = wire.DEFAULT_CALL_TIMEOUT,
        badges: BadgeBook | None = None,
        badge_link_seconds: float = DEFAULT_LINK_SECONDS,
    ) -> None:
        self.station_id = station_id
        self._store = store
        self._links = links
        self._listener = listener
        self._heartbeat = heartbeat_interval
        self._call_timeout = call_timeout
        self.view: StationView | None = None
        self._link: StationLink | None = None
        self._unlocks: dict[int, int] = {}  # unlock id -> spot, sent and not yet reported `unlocked`
        self._badges = badges  # None: badges are recorded, nothing more
        self._readers = BadgeReaders(badge_link_seconds)

    # lifecycle -------------------------------------------------------------

    async def on_start(self) -> None:
        view = await self._store.load(self.station_id)
        if view is None:
            raise LookupError(f"no station {self.station_id}")
        link = self._links.current(self.station_id)
        # After a restart: a booted link is still online; without one the station is offline.
        online = link is not None and link.booted
        self.view = view
        self._link = link
        if view.online != online:  # e.g. the socket dropped while the actor was down: tell everyone
            await self._set_online(online)

    async def handle(self, message: StationMessage) -> StationReply:
        assert self.view is not None
        match message:
            case Incoming(link, call):
                if link is self._link:
                    await self._incoming(link, call)
                return None
            case Attached(link):
                await self._attached(link)
                return None
            case Detached(link):
                if link is self._link:
                    self._link = None
                    await self._set_online(False, strict=False)
                return None
            case UnlockSpot(spot, unlock_id):
                return await self._unlock(spot, unlock_id)
            case SetSpotMaintenance(spot, in_maintenance):
                return await self._set_spot_maintenance(spot, in_maintenance)
            case Command(action, payload):
                return self._command(action, payload)
            case GetView():
                return self.view
            case Crash(reason):
                raise RuntimeError(reason)
            case StartBadgeLink() | BadgeLinkExpired() | BadgeLinkAbandoned():
                return await self._badge_message(message)
        raise TypeError(f"unknown message {message!r}")

    # connection ------------------------------------------------------------

    async def _attached(self, link: StationLink) -> None:
        was_online = self.view is not None and self.view.online
        self._link = link
        if was_online:  # the previous connection is gone: offline until this one boots
            await self._set_online(False, strict=False)

    async def _set_online(self, online: bool, firmware: dict[str, Any] | None = None, *, strict: bool = True) -> None:
        """Record and announce the online state.

        ``strict=False`` (going offline): a failure of the store or of a listener is
        logged and the state is applied in memory anyway; the socket is gone either way.
        """
        assert self.view is not None
        before = self.view
        if before.online == online and firmware is None:
            return
        changed = before.online != online
        feed = None
        if changed:  # written with the state, in one transaction
            event = EventName.STATION_ONLINE if online else EventName.STATION_OFFLINE
            feed = FeedItem(event, {"station_id": self.station_id, "online": online})
        recorded = True
        try:
            await self._store.set_online(self.station_id, online, firmware=firmware, feed=feed)
        except Exception:
            if strict:
                raise
            recorded = False
            log.warning("station %s: recording online=%s failed; applied in memory only", self.station_id, online,
                        exc_info=True, extra={"station_id": self.station_id})
        self.view = replace(before, online=online, last_seen_ms=now_ms(), firmware=firmware or before.firmware)
        if feed is not None:
            try:
                if not recorded:  # the event was not written with the state: published on its own, if it can be
                    await self._listener.station_event(self.view, feed.event, feed.data)
                await self._listener.station_changed(before, self.view)
            except Exception:
                if strict:
                    raise
                log.warning("station %s: announcing online=%s failed", self.station_id, online, exc_info=True,
                            extra={"station_id": self.station_id})

    # station -> backend ----------------------------------------------------

    async def _incoming(self, link: StationLink, call: wire.Call) -> None:
        if call.action is wire.Action.BOOT:
            await self._boot(link, call)
            return
        if not link.booted:
            await answer(link, wire.error(call.id, wire.ErrorCode.PROTOCOL_ERROR, "the first CALL must be boot"))
            return
        try:
            result, changes = self._decide(call)
        except _Misfit as misfit:
            await answer(link, wire.error(call.id, wire.ErrorCode.FORMAT_VIOLATION, str(misfit)))
            return
        payload = call.payload.model_dump(mode="json")
        feed = self._feed_item(call, payload)
        try:
            earlier = await self._store.record(
                self.station_id, call.id, call.action.value, payload, result, changes, feed=feed
            )
        except Exception as exc:  # e.g. the database is down: nothing recorded, nothing applied
            await self._internal_error(link, call, "record", exc)
            return
        if earlier is not None:  # a resend: same answer, nothing applied twice
            await answer(link, wire.result(call.id, earlier))
            return
        if isinstance(call.payload, wire.UnlockedPayload):
            self._unlocks.pop(call.payload.unlock, None)
        before = self.view
        await self._apply(call, changes)
        assert before is not None and self.view is not None
        try:
            await self._listener.station_reported(before, self.view, call.payload)
        except Exception:  # recorded and applied: a listener's trouble stays its own
            log.exception("station %s: a listener failed on a report", self.station_id,
                          extra={"station_id": self.station_id})
        if isinstance(call.payload, wire.BadgeRfidPayload):
            await self._badge_read(call.payload)
        await answer(link, wire.result(call.id, result))

    async def _internal_error(self, link: StationLink, call: wire.Call, what: str, exc: Exception) -> None:
        log.warning("station %s: %s of %s %r failed: %r; answered InternalError", self.station_id, what,
                    call.action.value, call.id, exc, extra={"station_id": self.station_id})
        await answer(link, wire.error(
            call.id, wire.ErrorCode.INTERNAL_ERROR, "the event could not be recorded now; send it again later"
        ))

    def _feed_item(self, call: wire.Call, payload: dict[str, Any]) -> FeedItem | None:
        event = _FEED_EVENTS.get(call.action)
        if event is None:
            return None
        data = {"station_id": self.station_id, **payload}
        if isinstance(call.payload, wire.UnlockedPayload):
            # Matched to the command that asked for it, or opened without one.
            data["requested"] = self._unlocks.get(call.payload.unlock) == call.payload.spot
        return FeedItem(event, data)

    async def _boot(self, link: StationLink, call: wire.Call) -> None:
        assert self.view is not None
        if not self.view.enabled:
            rejected = wire.BootResult(status=wire.BootStatus.REJECTED, heartbeat_interval=self._heartbeat,
                                       server_time=now_ms())
            await answer(link, wire.result(call.id, rejected))
            self.background.start_soon(link.close, 1008, "station disabled")
            return
        firmware = call.payload.model_dump(mode="json")
        try:
            await self._set_online(True, firmware)
        except Exception as exc:
            await self._internal_error(link, call, "boot", exc)
            return
        link.booted = True
        accepted = wire.BootResult(status=wire.BootStatus.ACCEPTED, heartbeat_interval=self._heartbeat,
                                   server_time=now_ms())
        await answer(link, wire.result(call.id, accepted))

    def _decide(self, call: wire.Call) -> tuple[dict[str, Any], Changes]:
        """The RESULT and the changes of an event, without applying anything."""
        assert self.view is not None
        payload = call.payload
        if isinstance(payload, wire.StatePayload):
            spots = tuple(
                replace(self._spot(s.spot), vehicle=s.vehicle, lock=int(s.lock)) for s in payload.spots
            )
            readings = tuple(VehicleReading(v.vehicle, v.voltage, v.battery) for v in payload.vehicles)
            return {}, Changes(spots=spots, vehicles=readings, state=payload.model_dump(mode="json"))
        if isinstance(payload, wire.LockedPayload):
            spot = self._spot(payload.spot)
            if spot.in_maintenance or not spot.is_accessible:
                return {"accepted": int(wire.LockAccepted.DENY)}, Changes()
            accepted = wire.LockAccepted.ACCEPT_CACHE if payload.cache_accepted else wire.LockAccepted.ACCEPT
            vehicle = payload.vehicle or None
            cause = None if vehicle is None else Returned(payload.spot, vehicle, payload.time)
            return {"accepted": int(accepted)}, Changes(spots=(replace(spot, vehicle=vehicle, lock=1),), cause=cause)
        if isinstance(payload, wire.UnlockedPayload):
            spot = self._spot(payload.spot)
            vehicle = payload.vehicle or spot.vehicle
            released = None if not vehicle else Released(payload.spot, vehicle, payload.unlock or None)
            return {}, Changes(spots=(replace(spot, vehicle=None, lock=0),), cause=released)
        if isinstance(payload, wire.UnexpectedUnlockPayload):
            spot = self._spot(payload.spot)
            return {}, Changes(spots=(replace(spot, lock=0),))
        number = getattr(payload, "spot", None)  # badge, alert, fault, ...
        if number is not None:
            self._spot(number)
        return {}, Changes()

    def _spot(self, number: int) -> SpotView:
        assert self.view is not None
        spot = self.view.spot(number)
        if spot is None:
            raise _Misfit(f"spot: station {self.station_id} has no spot {number}")
        return spot

    async def _apply(self, call: wire.Call, changes: Changes) -> None:
        """Update the live state after the event (and its feed event) is recorded, then tell the listeners."""
        assert self.view is not None
        before = self.view
        spots = {s.number: s for s in before.spots}
        for spot in changes.spots:
            spots[spot.number] = spot
        after = replace(before, spots=tuple(spots[n] for n in sorted(spots)), last_seen_ms=now_ms())
        payload = call.payload
        if isinstance(payload, wire.StatePayload):
            after = replace(
                after, vehicles=changes.vehicles, mainboard=payload.mainboard.model_dump(mode="json"),
                connectivity=payload.connectivity.model_dump(mode="json"),
            )
        self.view = after
        if isinstance(payload, wire.LockedPayload) and not payload.vehicle:
            # The station could not read the vehicle: ask it to report the spot again (its `locked` then
            # names the vehicle, and a rent riding it ends).
            self.background.start_soon(self._refresh_unreadable, payload.spot)
        if changes.spots or changes.vehicles:
            try:
                await self._listener.station_changed(before, after, changes.cause)
            except Exception:  # the event is recorded and applied: a listener's trouble stays its own
                log.exception("station %s: a listener failed on a change", self.station_id,
                              extra={"station_id": self.station_id})

    # backend -> station ----------------------------------------------------

    def _usable_link(self) -> StationLink | CommandFailed:
        if self._link is None or not self._link.booted:
            return CommandFailed(Failure.OFFLINE, f"station {self.station_id} is offline")
        return self._link

    def _command(self, action: wire.Action, payload: wire.Payload, unlock_id: int | None = None) -> StationReply:
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return link
        spot = getattr(payload, "spot", None)
        if spot is not None and self.view is not None and self.view.spot(spot) is None:
            return CommandFailed(Failure.INVALID, f"station {self.station_id} has no spot {spot}")
        pending = PendingCommand(action.value, unlock_id)
        self.background.start_soon(self._send_command, link, pending, payload)
        return pending

    async def _unlock(self, spot: int, unlock_id: int | None = None) -> StationReply:
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return link
        if self.view is None or self.view.spot(spot) is None:
            return CommandFailed(Failure.INVALID, f"station {self.station_id} has no spot {spot}")
        if unlock_id is None:
            try:
                unlock_id = await self._store.next_unlock_id()
            except Exception as exc:  # e.g. the database is down: nothing sent, the caller may retry
                log.warning("station %s: no unlock id for spot %s: %r", self.station_id, spot, exc)
                return CommandFailed(Failure.UNAVAILABLE, "the unlock could not be recorded; try again shortly")
        self._unlocks[unlock_id] = spot
        if len(self._unlocks) > 256:  # never answered: forget the oldest
            del self._unlocks[next(iter(self._unlocks))]
        return self._command(wire.Action.UNLOCK, wire.UnlockPayload(spot=spot, unlock=unlock_id), unlock_id)

    async def _set_spot_maintenance(self, number: int, in_maintenance: bool) -> StationView | CommandFailed:
        assert self.view is not None
        spot = self.view.spot(number)
        if spot is None:
            return CommandFailed(Failure.INVALID, f"station {self.station_id} has no spot {number}")
        if spot.in_maintenance != in_maintenance:
            await self._store.set_spot_maintenance(self.station_id, number, in_maintenance)
            before = self.view
            spots = tuple(replace(s, in_maintenance=in_maintenance) if s.number == number else s for s in before.spots)
            self.view = replace(before, spots=spots)
            try:
                await self._listener.station_changed(before, self.view)
            except Exception:
                log.exception("station %s: a listener failed on a change", self.station_id,
                              extra={"station_id": self.station_id})
        return self.view

    async def _refresh_unreadable(self, spot: int) -> None:
        """Ask the station to send ``locked`` again for a spot whose vehicle it could not read."""
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return  # it reports the spot again at its next boot anyway
        try:
            await link.call(wire.Action.REFRESH.value, wire.RefreshPayload(spot=spot), self._call_timeout)
        except (LinkClosed, CallTimeout, CallRefused) as exc:
            log.info("station %s: refresh of spot %s failed: %r", self.station_id, spot, exc)

    async def _send_command(self, link: StationLink, pending: PendingCommand, payload: wire.Payload) -> None:
        await send_command(link, pending, payload, self._call_timeout, f"station {self.station_id}")

    # badges: links waiting at the readers (bookkeeping in actors/badge_reader.py) ------------

    async def _badge_message(self, message: StartBadgeLink | BadgeLinkExpired | BadgeLinkAbandoned) -> StationReply:
        match message:
            case StartBadgeLink(user_id, name, spot):
                return self._start_badge_link(user_id, name, spot)
            case BadgeLinkExpired(waiting):
                if self._readers.drop(waiting):
                    await self._badge_link_failed(waiting, LinkFailure.TIMEOUT)
            case BadgeLinkAbandoned(waiting):
                self._readers.drop(waiting)
        return None

    def _start_badge_link(self, user_id: int, name: str, spot: int | None) -> StationReply:
        """Wait for the user's badge at a reader and tell the station (LINK_STARTED)."""
        if self._badges is None:
            return CommandFailed(Failure.UNAVAILABLE, "badges cannot be linked here")
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return link
        if spot is not None and self.view is not None and self.view.spot(spot) is None:
            return CommandFailed(Failure.INVALID, f"station {self.station_id} has no spot {spot}")
        waiting = self._readers.start(user_id, name, spot, trio.current_time())
        if waiting is None:
            return BadgeReaderBusy(spot)
        started = self._badge_feedback(wire.BadgeFeedbackStatus.LINK_STARTED, spot)
        if isinstance(started, PendingCommand):
            self.background.start_soon(self._watch_badge_link, waiting, started)
        else:
            self._readers.drop(waiting)
        return started

    async def _watch_badge_link(self, waiting: PendingLink, started: PendingCommand) -> None:
        """Ends the link when the station did not take LINK_STARTED, else when its window ends."""
        if isinstance(await started.wait(), CommandFailed):
            await self._tell_self_waiting(BadgeLinkAbandoned(waiting))
            return
        await trio.sleep_until(waiting.deadline)
        await self._tell_self_waiting(BadgeLinkExpired(waiting))

    async def _tell_self_waiting(self, message: StationMessage) -> None:
        """From a background task: queue ``message``, waiting for room (a timer's message is never dropped)."""
        with contextlib.suppress(ActorStopped):
            await self.ref.send(message)

    async def _badge_read(self, payload: wire.BadgeRfidPayload) -> None:
        """A badge at a reader (recorded already): it completes the link waiting there, else it is an unlock."""
        if self._badges is None:
            return
        waiting = self._readers.take(payload.spot, trio.current_time())
        if waiting is None:
            self.background.start_soon(self._badge_presented, self._badges, payload.spot, payload.badge_id)
            return
        try:
            outcome = await self._badges.link(waiting.user_id, waiting.name, payload.badge_id)
        except Exception:  # e.g. the database is down: the rider is told, the station shows a failure
            log.warning("station %s: linking a badge failed", self.station_id, exc_info=True,
                        extra={"station_id": self.station_id})
            await self._badge_link_failed(waiting, LinkFailure.UNAVAILABLE)
            return
        if outcome is LinkOutcome.LINKED:
            self._badge_feedback(wire.BadgeFeedbackStatus.LINKED, waiting.spot)
        else:
            await self._badge_link_failed(waiting, LinkFailure.TAKEN)

    async def _badge_link_failed(self, waiting: PendingLink, reason: LinkFailure) -> None:
        """The station shows a failure; the rider gets ``badge.link_failed`` (best effort: a link is no rent)."""
        self._badge_feedback(wire.BadgeFeedbackStatus.FAILURE, waiting.spot)
        assert self._badges is not None
        try:
            await self._badges.link_failed(waiting.user_id, waiting.name, reason)
        except Exception:
            log.warning("station %s: telling user %s of a failed badge link failed", self.station_id,
                        waiting.user_id, exc_info=True, extra={"station_id": self.station_id})

    def _badge_feedback(self, status: wire.BadgeFeedbackStatus, spot: int | None) -> StationReply:
        return self._command(wire.Action.BADGE_FEEDBACK, wire.BadgeFeedbackPayload(status=status, spot=spot))

    async def _badge_presented(self, badges: BadgeBook, spot: int | None, uid: str) -> None:
        try:
            await badges.badge_presented(self.station_id, spot, uid)
        except Exception:  # the hook's trouble never crashes the station
            log.exception("station %s: the badge unlock hook failed", self.station_id,
                          extra={"station_id": self.station_id})


class _Misfit(Exception):
    """A well-formed frame that does not fit this station."""


_FEED_EVENTS: dict[str, EventName] = {
    wire.Action.STATE: EventName.STATION_STATE,
    wire.Action.LOCKED: EventName.SPOT_LOCKED,
    wire.Action.UNLOCKED: EventName.SPOT_UNLOCKED,
    wire.Action.UNEXPECTED_UNLOCK: EventName.SPOT_UNLOCKED,
    wire.Action.ALERT: EventName.ALERT,
    wire.Action.FAULT: EventName.FAULT,
}
