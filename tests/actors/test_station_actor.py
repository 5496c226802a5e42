"""The station actor without a server: supervised, with in-memory versions of its I/O.

``MemoryStationStore`` (the database), ``FakeLink`` / ``LinkTable`` (the
gateway's sockets) and ``RecordingListener`` (the feed and live availability)
stand for the actor's external I/O interfaces: the only fakes here. Frames go
through the real ``protocols.station`` parser and serialisers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from actors import ActorCrashed, ActorRef, ActorSpec, Supervisor
from actors.station import (
    Attached,
    CallRefused,
    CallTimeout,
    Changes,
    Command,
    CommandFailed,
    Crash,
    Detached,
    Failure,
    FeedItem,
    GetView,
    Incoming,
    LinkClosed,
    PendingCommand,
    SpotEvent,
    SpotView,
    StationActor,
    StationMessage,
    StationReply,
    StationView,
    UnlockSpot,
    VehicleReading,
)
from protocols import station as wire

StationRef = ActorRef[StationMessage, StationReply]

HEARTBEAT = 600
CALL_TIMEOUT = 10.0
BOARD = {"firmware_version": "2.4.1", "board_revision": "C"}


# --------------------------------------------------------------------------
# The actor's I/O, in memory


@dataclass
class StationRow:
    cluster_id: int
    enabled: bool = True
    online: bool = False
    firmware: dict[str, Any] | None = None
    last_state: dict[str, Any] | None = None


@dataclass
class SpotRow:
    spot_id: int
    in_maintenance: bool = False
    is_accessible: bool = True
    vehicle: int | None = None
    lock: int | None = None


@dataclass
class MessageRow:
    action: str
    payload: dict[str, Any]
    result: dict[str, Any]


class MemoryStationStore:
    """Rows like the real store's ``stations``, ``spots`` and ``station_messages``; views built from them."""

    def __init__(self, journal: list[str] | None = None) -> None:
        self.stations: dict[int, StationRow] = {}
        self.spots: dict[int, dict[int, SpotRow]] = {}
        self.station_messages: dict[tuple[int, str], MessageRow] = {}
        self.loads: list[int] = []
        self.journal = journal if journal is not None else []
        self._unlock_ids = itertools.count(500)
        # Where the feed events written with an event go once "committed" (the real store: the bus).
        self.feed_sink: RecordingListener | None = None
        self.down = False  # the database is unreachable: every call raises

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database down")

    def add_station(self, station_id: int, spots: int = 4, *, enabled: bool = True,
                    maintenance: tuple[int, ...] = ()) -> None:
        self.stations[station_id] = StationRow(cluster_id=10 * station_id, enabled=enabled)
        self.spots[station_id] = {
            n: SpotRow(spot_id=100 * station_id + n, in_maintenance=n in maintenance) for n in range(1, spots + 1)
        }

    def messages(self, station_id: int) -> list[tuple[str, str]]:
        return [(mid, row.action) for (sid, mid), row in self.station_messages.items() if sid == station_id]

    async def load(self, station_id: int) -> StationView | None:
        await trio.lowlevel.checkpoint()
        self._check()
        self.loads.append(station_id)
        return self.view(station_id)

    def view(self, station_id: int) -> StationView | None:
        row = self.stations.get(station_id)
        if row is None:
            return None
        state = row.last_state or {}
        return StationView(
            station_id=station_id, cluster_id=row.cluster_id, enabled=row.enabled, online=row.online,
            last_seen_ms=None,
            spots=tuple(
                SpotView(number=n, spot_id=s.spot_id, vehicle=s.vehicle, lock=s.lock, in_maintenance=s.in_maintenance,
                         is_accessible=s.is_accessible)
                for n, s in sorted(self.spots[station_id].items())
            ),
            vehicles=tuple(VehicleReading(v["vehicle"], v["voltage"], v.get("battery"))
                           for v in state.get("vehicles", [])),
            mainboard=state.get("mainboard"), connectivity=state.get("connectivity"), firmware=row.firmware,
        )

    async def record(
        self, station_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        changes: Changes, feed: FeedItem | None = None,
    ) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        self._check()
        earlier = self.station_messages.get((station_id, message_id))
        if earlier is not None:
            return earlier.result
        self.station_messages[(station_id, message_id)] = MessageRow(action, payload, result)
        for spot in changes.spots:
            row = self.spots[station_id][spot.number]
            row.vehicle, row.lock = spot.vehicle, spot.lock
        if changes.state is not None:
            self.stations[station_id].last_state = changes.state
        self.journal.append(f"record {message_id}")
        if feed is not None and self.feed_sink is not None:
            view = self.view(station_id)
            assert view is not None
            await self.feed_sink.station_event(view, feed.event, feed.data)
        return None

    async def set_online(
        self, station_id: int, online: bool, *, firmware: dict[str, Any] | None = None, feed: FeedItem | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        row = self.stations[station_id]
        row.online = online
        if firmware is not None:
            row.firmware = firmware
        if feed is not None and self.feed_sink is not None:
            view = self.view(station_id)
            assert view is not None
            await self.feed_sink.station_event(view, feed.event, feed.data)

    async def next_unlock_id(self) -> int:
        await trio.lowlevel.checkpoint()
        self._check()
        return next(self._unlock_ids)

    async def set_spot_maintenance(self, station_id: int, spot: int, in_maintenance: bool) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        self.spots[station_id][spot].in_maintenance = in_maintenance


@dataclass
class BackendCall:
    """A CALL the backend sent on a link, waiting for the station's answer."""

    frame: list[Any]
    done: trio.Event = field(default_factory=trio.Event)
    payload: dict[str, Any] | None = None
    failure: Exception | None = None

    @property
    def action(self) -> str:
        return str(self.frame[2])

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.frame[3]
        return body

    def answer(self, payload: dict[str, Any]) -> None:
        """The station's RESULT."""
        self.payload = payload
        self.done.set()

    def refuse(self, description: str) -> None:
        """The station's ERROR."""
        self.failure = CallRefused(f"GenericError: {description}")
        self.done.set()


class FakeLink:
    """One station connection as the gateway holds it: frames sent are kept, backend CALLs wait for answers."""

    _serial = itertools.count(1)

    def __init__(self, journal: list[str] | None = None) -> None:
        self.booted = False
        self.serial = next(self._serial)
        self.sent: list[list[Any]] = []
        self.calls: list[BackendCall] = []
        self.closed: tuple[int, str] | None = None
        self.journal = journal if journal is not None else []
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<FakeLink #{self.serial}>"

    async def send(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed is not None:
            raise LinkClosed(repr(self))
        frame = json.loads(text)
        self.sent.append(frame)
        self.journal.append(f"send {frame[1]}")

    async def call(self, action: str, payload: wire.Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        call = BackendCall(json.loads(wire.call(f"b{self.serial}-{next(self._ids)}", action, payload)))
        await self.send(json.dumps(call.frame))
        self.calls.append(call)
        with trio.move_on_after(timeout):
            await call.done.wait()
        if not call.done.is_set():
            raise CallTimeout(f"{action} to {self!r}")
        if call.failure is not None:
            raise call.failure
        assert call.payload is not None
        return call.payload

    async def close(self, code: int, reason: str) -> None:
        """Closed by the backend."""
        await trio.lowlevel.checkpoint()
        self.lost(code, reason)

    def lost(self, code: int = 1006, reason: str = "gone") -> None:
        """The socket is gone: every CALL still waiting fails at once (the gateway's ``lost()``)."""
        if self.closed is None:
            self.closed = (code, reason)
        for call in self.calls:
            if not call.done.is_set():
                call.failure = LinkClosed(repr(self))
                call.done.set()

    def answer_to(self, call_id: str) -> list[Any]:
        """The RESULT or ERROR the actor sent for a station CALL."""
        answers = [frame for frame in self.sent if frame[0] != wire.MessageType.CALL and frame[1] == call_id]
        assert len(answers) == 1, (call_id, self.sent)
        return answers[0]

    def backend_call(self, action: str, **fields: Any) -> BackendCall:
        found = [c for c in self.calls if c.action == action and all(c.body.get(k) == v for k, v in fields.items())]
        assert len(found) == 1, (action, fields, [c.frame for c in self.calls])
        return found[0]


class LinkTable:
    """The gateway's table of current connections (``StationLinks``)."""

    def __init__(self) -> None:
        self.links: dict[int, FakeLink] = {}

    def current(self, station_id: int) -> FakeLink | None:
        return self.links.get(station_id)


class RecordingListener:
    def __init__(self, journal: list[str] | None = None) -> None:
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.changes: list[tuple[StationView, StationView]] = []
        self.journal = journal if journal is not None else []

    async def station_event(self, view: StationView, event: str, data: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append((view.station_id, event, data))
        self.journal.append(f"event {event}")

    async def station_changed(self, before: StationView, after: StationView, cause: SpotEvent | None = None) -> None:
        await trio.lowlevel.checkpoint()
        self.changes.append((before, after))

    async def station_reported(self, before: StationView, after: StationView, payload: wire.Payload) -> None:
        await trio.lowlevel.checkpoint()

    def names(self, station_id: int = 1) -> list[str]:
        return [event for sid, event, _ in self.events if sid == station_id]


# --------------------------------------------------------------------------
# Running the actor


@dataclass
class Rig:
    sup: Supervisor
    store: MemoryStationStore
    links: LinkTable
    listener: RecordingListener
    journal: list[str]

    async def start(self, station_id: int = 1) -> StationRef:
        def factory() -> StationActor:
            return StationActor(station_id, self.store, self.links, self.listener, heartbeat_interval=HEARTBEAT,
                                call_timeout=CALL_TIMEOUT)

        return await self.sup.start_child(ActorSpec(f"station:{station_id}", factory, kind="station"))

    async def connect(self, ref: StationRef, station_id: int = 1) -> FakeLink:
        """What the gateway does for a new socket: the link becomes current, then the actor hears of it."""
        link = FakeLink(self.journal)
        self.links.links[station_id] = link
        await ref.ask(Attached(link))
        return link

    async def detach(self, ref: StationRef, link: FakeLink, station_id: int = 1) -> None:
        """What the gateway does when a socket ends."""
        link.lost()
        if self.links.links.get(station_id) is link:
            del self.links.links[station_id]
        await ref.ask(Detached(link))


@asynccontextmanager
async def rig(*stations: int, **station_options: Any) -> AsyncIterator[Rig]:
    journal: list[str] = []
    store = MemoryStationStore(journal)
    for station_id in stations or (1,):
        store.add_station(station_id, **station_options)
    listener = RecordingListener(journal)
    store.feed_sink = listener
    async with Supervisor("stations").running() as sup:
        yield Rig(sup, store, LinkTable(), listener, journal)


_call_ids = itertools.count(1)


async def call(ref: StationRef, link: FakeLink, action: str, payload: dict[str, Any],
               call_id: str | None = None) -> list[Any]:
    """A station CALL through the real parser, handled by the actor; returns its answer on the link."""
    call_id = call_id or f"s-{next(_call_ids)}"
    frame = wire.parse_frame(json.dumps([2, call_id, action, payload]))
    assert isinstance(frame, wire.Call)
    await ref.ask(Incoming(link, frame))
    return link.answer_to(call_id)


async def boot(ref: StationRef, link: FakeLink, spots: int = 4) -> list[Any]:
    return await call(ref, link, "boot", {"mainboard": BOARD, "spots": [BOARD] * spots})


def state_payload(spots: dict[int, int | None], battery: int | None = 80) -> dict[str, Any]:
    return {
        "mainboard": {"v5": 5010, "v48": 48200, "temp": 23.5},
        "spots": [{"spot": n, "vehicle": v, "lock": 1 if v else 0} for n, v in sorted(spots.items())],
        "vehicles": [{"vehicle": v, "voltage": 41000 + v, "battery": battery} for v in spots.values() if v],
        "connectivity": {"type": "CAT-M1", "rssi": -71, "rsrp": -96},
    }


def locked(spot: int, vehicle: int, *, cache_accepted: bool = False) -> dict[str, Any]:
    return {"spot": spot, "vehicle": vehicle, "time": 1_700_000_000_000, "cache_accepted": cache_accepted}


async def view_of(ref: StationRef) -> StationView:
    view = await ref.ask(GetView())
    assert isinstance(view, StationView)
    return view


def spots_of(view: StationView) -> list[tuple[int, int | None, int | None]]:
    return [(s.number, s.vehicle, s.lock) for s in view.spots]


async def online_station(r: Rig, station_id: int = 1) -> tuple[StationRef, FakeLink]:
    ref = await r.start(station_id)
    link = await r.connect(ref, station_id)
    assert (await boot(ref, link))[0] == wire.MessageType.RESULT
    return ref, link


async def pending(ref: StationRef, message: StationMessage) -> PendingCommand:
    reply = await ref.ask(message)
    assert isinstance(reply, PendingCommand), reply
    await wait_all_tasks_blocked()  # the CALL is on the link
    return reply


# --------------------------------------------------------------------------
# Session start


async def test_a_call_before_boot_is_a_protocol_error_and_not_recorded() -> None:
    async with rig() as r:
        ref = await r.start()
        link = await r.connect(ref)
        answer = await call(ref, link, "state", state_payload({1: 101}), call_id="early-1")
        view = await view_of(ref)
    assert answer[:3] == [4, "early-1", "ProtocolError"]
    assert r.store.station_messages == {} and r.listener.events == []
    assert view.online is False and view.spot(1) == SpotView(1, 101)


async def test_boot_is_accepted_with_the_heartbeat_interval_and_the_server_time() -> None:
    async with rig() as r:
        ref = await r.start()
        link = await r.connect(ref)
        answer = await boot(ref, link)
        view = await view_of(ref)
        events, changes = r.listener.names(), list(r.listener.changes)
        after_boot = await call(ref, link, "state", state_payload({}))
    assert answer[0] == wire.MessageType.RESULT
    result = wire.BootResult.model_validate(answer[2])
    assert result.status is wire.BootStatus.ACCEPTED
    assert result.heartbeat_interval == HEARTBEAT and result.server_time > 1_600_000_000_000
    assert link.booted and view.online
    assert view.firmware == {"mainboard": BOARD, "spots": [BOARD] * 4}
    assert r.store.stations[1].online and r.store.stations[1].firmware == view.firmware
    assert events == ["station.online"]
    assert [(before.online, after.online) for before, after in changes] == [(False, True)]
    assert after_boot[0] == wire.MessageType.RESULT


async def test_a_disabled_station_is_rejected_and_its_link_closed() -> None:
    async with rig(enabled=False) as r:
        ref = await r.start()
        link = await r.connect(ref)
        answer = await boot(ref, link)
        await wait_all_tasks_blocked()
        view = await view_of(ref)
    assert answer[0] == wire.MessageType.RESULT and answer[2]["status"] == "rejected"
    assert link.closed is not None and link.closed[0] == 1008
    assert not link.booted and not view.online and not r.store.stations[1].online
    assert r.listener.events == [] and r.store.station_messages == {}


# --------------------------------------------------------------------------
# Station events


async def test_state_is_reconciled_into_spots_and_vehicle_readings_recorded_before_the_answer() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        r.journal.clear()
        answer = await call(ref, link, "state", state_payload({1: 101, 2: None, 3: 102, 4: None}, battery=64),
                            call_id="st-1")
        view = await view_of(ref)
    assert answer == [3, "st-1", {}]
    assert spots_of(view) == [(1, 101, 1), (2, None, 0), (3, 102, 1), (4, None, 0)]
    assert view.vehicles == (VehicleReading(101, 41101, 64), VehicleReading(102, 41102, 64))
    assert view.mainboard == {"v5": 5010, "v48": 48200, "temp": 23.5}
    assert view.connectivity == {"type": "CAT-M1", "rssi": -71, "rsrp": -96}
    assert (view.available_vehicles, view.free_spots) == (2, 2)
    # Written first, then told, then answered.
    assert r.journal == ["record st-1", "event station.state", "send st-1"]
    assert [(n, s.vehicle, s.lock) for n, s in r.store.spots[1].items()] == spots_of(view)
    assert r.store.messages(1) == [("st-1", "state")]
    _, event, data = r.listener.events[-1]
    assert event == "station.state" and data["station_id"] == 1 and data["spots"][0] == {
        "spot": 1, "vehicle": 101, "lock": 1}
    before, after = r.listener.changes[-1]
    assert spots_of(before) == [(n, None, None) for n in range(1, 5)] and after == view


@pytest.mark.parametrize(
    ("spot", "cache_accepted", "accepted", "docked"),
    [(1, False, 0, (1, 103, 1)), (2, True, 1, (2, 103, 1)), (3, False, 2, (3, None, None))],
    ids=["accept", "accept-cache", "deny-maintenance"],
)
async def test_locked_is_accepted_or_denied_for_a_spot_in_maintenance(
    spot: int, cache_accepted: bool, accepted: int, docked: tuple[int, int | None, int | None]
) -> None:
    async with rig(maintenance=(3,)) as r:
        ref, link = await online_station(r)
        answer = await call(ref, link, "locked", locked(spot, 103, cache_accepted=cache_accepted), call_id="lk-1")
        view = await view_of(ref)
    assert answer == [3, "lk-1", {"accepted": accepted}]
    assert wire.LockedResult.model_validate(answer[2]).accepted == accepted
    assert spots_of(view)[spot - 1] == docked
    assert (r.store.spots[1][spot].vehicle, r.store.spots[1][spot].lock) == docked[1:]
    assert r.store.station_messages[(1, "lk-1")].result == {"accepted": accepted}


async def test_a_vehicle_id_that_could_not_be_read_docks_as_unknown() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        answer = await call(ref, link, "locked", locked(2, 0))
        view = await view_of(ref)
    assert answer[2] == {"accepted": 0}
    assert view.spot(2) == SpotView(2, 102, vehicle=None, lock=1)


async def test_a_repeated_message_id_is_answered_the_same_and_applied_once() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        first = await call(ref, link, "locked", locked(2, 103, cache_accepted=True), call_id="boot1-7")
        # The vehicle leaves; then the station, reconnected, sends its unanswered `locked` again.
        await call(ref, link, "unlocked", {"spot": 2, "unlock": 0, "vehicle": 103}, call_id="boot1-8")
        await r.detach(ref, link)
        again_link = await r.connect(ref)
        await boot(ref, again_link)
        events_before = len(r.listener.events)
        changes_before = len(r.listener.changes)
        again = await call(ref, again_link, "locked", locked(2, 103, cache_accepted=True), call_id="boot1-7")
        view = await view_of(ref)
    assert first == again == [3, "boot1-7", {"accepted": 1}]
    assert r.store.messages(1) == [("boot1-7", "locked"), ("boot1-8", "unlocked")]
    assert r.listener.names().count("spot.locked") == 1
    assert len(r.listener.events) == events_before and len(r.listener.changes) == changes_before
    assert view.spot(2) == SpotView(2, 102, vehicle=None, lock=0)  # not docked again
    assert (r.store.spots[1][2].vehicle, r.store.spots[1][2].lock) == (None, 0)


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("locked", locked(9, 101)),
        ("unlocked", {"spot": 9, "unlock": 0, "vehicle": None}),
        ("unexpected-unlock", {"spot": 9}),
        ("state", state_payload({1: 101, 9: 102})),
        ("alert", {"alert": 0, "alert_name": "shake", "alert_status": "appearing", "spot": 5}),
        ("fault", {"fault": 1, "fault_name": "charge-fault", "fault_status": "on", "spot": 32}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_a_call_naming_a_spot_the_station_does_not_have_is_a_format_violation(
    action: str, payload: dict[str, Any]
) -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        before = await view_of(ref)
        events = len(r.listener.events)
        answer = await call(ref, link, action, payload, call_id="bad-1")
        after = await view_of(ref)
        events_after = len(r.listener.events)
        still = await call(ref, link, "unexpected-unlock", {"spot": 4})
    assert answer[:3] == [4, "bad-1", "FormatViolation"] and "spot" in answer[3]
    assert after == before and events_after == events
    assert (1, "bad-1") not in r.store.station_messages
    assert still[0] == wire.MessageType.RESULT  # the actor goes on
    assert r.sup.metrics.restarts_total == 0


# --------------------------------------------------------------------------
# Backend commands


async def test_unlocking_an_offline_station_fails_at_once() -> None:
    async with rig() as r:
        ref = await r.start()
        never_connected = await ref.ask(UnlockSpot(1))
        link = await r.connect(ref)
        not_booted = await ref.ask(UnlockSpot(1))
        ping = await ref.ask(Command(wire.Action.PING, wire.PingPayload()))
    for reply in (never_connected, not_booted, ping):
        assert isinstance(reply, CommandFailed) and reply.failure is Failure.OFFLINE
    assert link.calls == []
    assert await r.store.next_unlock_id() == 500  # no unlock id spent


async def test_an_unlock_goes_to_the_link_with_the_stores_next_unlock_id() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        first = await pending(ref, UnlockSpot(2))
        command = link.backend_call("unlock", spot=2)
        command.answer({"status": "accepted"})
        outcome = await first.wait()
        second = await pending(ref, UnlockSpot(3))
        no_spot = await ref.ask(UnlockSpot(9))
    assert (first.action, first.unlock_id) == ("unlock", 500)
    assert command.frame == [2, command.frame[1], "unlock", {"spot": 2, "unlock": 500}]
    parsed = wire.parse_frame(json.dumps(command.frame), actions=wire.BACKEND_ACTIONS)
    assert isinstance(parsed, wire.Call) and parsed.payload == wire.UnlockPayload(spot=2, unlock=500)
    assert outcome == {"status": "accepted"}
    assert second.unlock_id == 501 and link.backend_call("unlock", spot=3).body["unlock"] == 501
    assert isinstance(no_spot, CommandFailed) and no_spot.failure is Failure.INVALID


async def test_an_unlocked_event_says_whether_an_unlock_command_asked_for_it() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        await call(ref, link, "state", state_payload({1: 101, 2: 102, 3: 103}))
        command = await pending(ref, UnlockSpot(1))
        link.backend_call("unlock", spot=1).answer({"status": "accepted"})
        assert await command.wait() == {"status": "accepted"}
        unlock_id = command.unlock_id
        assert unlock_id is not None
        await call(ref, link, "unlocked", {"spot": 1, "unlock": unlock_id, "vehicle": 101})
        await call(ref, link, "unlocked", {"spot": 2, "unlock": 0, "vehicle": 102})  # opened without a command
        await call(ref, link, "unlocked", {"spot": 3, "unlock": unlock_id, "vehicle": 103})  # an id already used
        view = await view_of(ref)
    unlocked = [(data["spot"], data["unlock"], data["requested"]) for _, event, data in r.listener.events
                if event == "spot.unlocked"]
    assert unlocked == [(1, unlock_id, True), (2, 0, False), (3, unlock_id, False)]
    assert spots_of(view)[:3] == [(1, None, 0), (2, None, 0), (3, None, 0)]


async def _accept(link: FakeLink, command: BackendCall) -> None:
    command.answer({"status": "accepted"})


async def _reject(link: FakeLink, command: BackendCall) -> None:
    command.answer({"status": "rejected"})


async def _refuse(link: FakeLink, command: BackendCall) -> None:
    command.refuse("locker jammed")


async def _stay_silent(link: FakeLink, command: BackendCall) -> None:
    pass  # the clock runs out


async def _close(link: FakeLink, command: BackendCall) -> None:
    await link.close(1006, "gone")


@pytest.mark.parametrize(
    ("respond", "expected"),
    [
        (_accept, {"status": "accepted"}),
        (_reject, Failure.REJECTED),
        (_refuse, Failure.REJECTED),
        (_stay_silent, Failure.TIMEOUT),
        (_close, Failure.OFFLINE),
    ],
    ids=["accepted", "rejected", "error", "timeout", "closed"],
)
async def test_the_links_answer_settles_the_pending_unlock(
    respond: Callable[[FakeLink, BackendCall], Awaitable[None]], expected: dict[str, Any] | Failure,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        command = await pending(ref, UnlockSpot(1))
        await respond(link, link.backend_call("unlock", spot=1))
        outcome = await command.wait()
        view = await view_of(ref)
    if isinstance(expected, Failure):
        assert isinstance(outcome, CommandFailed) and outcome.failure is expected
    else:
        assert outcome == expected
    assert view.online  # a command's fate never changes the connection state: only Detached does
    assert r.sup.metrics.restarts_total == 0


async def test_several_commands_in_flight_settle_independently() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        commands = {
            "unlock 1": await pending(ref, UnlockSpot(1)),
            "unlock 2": await pending(ref, UnlockSpot(2)),
            "ping": await pending(ref, Command(wire.Action.PING, wire.PingPayload())),
            "refresh 4": await pending(ref, Command(wire.Action.REFRESH, wire.RefreshPayload(spot=4))),
        }
        calls = {
            "unlock 1": link.backend_call("unlock", spot=1),
            "unlock 2": link.backend_call("unlock", spot=2),
            "ping": link.backend_call("ping"),
            "refresh 4": link.backend_call("refresh", spot=4),
        }
        outcomes: dict[str, dict[str, Any] | CommandFailed] = {}
        settled: list[list[str]] = []

        async def collect(label: str) -> None:
            outcomes[label] = await commands[label].wait()

        async with trio.open_nursery() as nursery:
            for label in commands:
                nursery.start_soon(collect, label)
            await wait_all_tasks_blocked()
            settled.append(sorted(outcomes))
            calls["ping"].answer({})
            await wait_all_tasks_blocked()
            settled.append(sorted(outcomes))
            calls["unlock 2"].answer({"status": "rejected"})
            calls["refresh 4"].refuse("busy")
            await wait_all_tasks_blocked()
            settled.append(sorted(outcomes))
            calls["unlock 1"].answer({"status": "accepted"})
    assert len({c.frame[1] for c in calls.values()}) == 4  # distinct CALL ids
    assert {commands["unlock 1"].unlock_id, commands["unlock 2"].unlock_id} == {500, 501}
    assert calls["unlock 1"].body["unlock"] == commands["unlock 1"].unlock_id
    assert settled == [[], ["ping"], ["ping", "refresh 4", "unlock 2"]]
    assert outcomes["ping"] == {} and outcomes["unlock 1"] == {"status": "accepted"}
    for label in ("unlock 2", "refresh 4"):
        failed = outcomes[label]
        assert isinstance(failed, CommandFailed) and failed.failure is Failure.REJECTED


# --------------------------------------------------------------------------
# Connections


async def test_detaching_the_current_link_takes_the_station_offline() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        await r.detach(ref, link)
        view = await view_of(ref)
        unlock = await ref.ask(UnlockSpot(1))
    assert not view.online and not r.store.stations[1].online
    assert r.listener.names() == ["station.online", "station.offline"]
    assert r.listener.events[-1][2] == {"station_id": 1, "online": False}
    assert [(b.online, a.online) for b, a in r.listener.changes] == [(False, True), (True, False)]
    assert isinstance(unlock, CommandFailed) and unlock.failure is Failure.OFFLINE


async def test_detaching_an_old_link_changes_nothing() -> None:
    async with rig() as r:
        ref, old = await online_station(r)
        new = await r.connect(ref)  # the newest connection wins
        await boot(ref, new)
        events = list(r.listener.events)
        await r.detach(ref, old)  # the old socket's end arrives late
        view = await view_of(ref)
        command = await pending(ref, UnlockSpot(4))
        new.backend_call("unlock", spot=4).answer({"status": "accepted"})
        outcome = await command.wait()
    assert view.online and r.store.stations[1].online
    assert r.listener.events == events
    assert r.listener.names() == ["station.online", "station.offline", "station.online"]
    assert old.calls == [] and outcome == {"status": "accepted"}


async def test_an_answer_on_a_link_already_closed_does_not_crash_the_actor() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        link.lost()  # the socket is gone; the gateway's Detached is not handled yet
        frame = wire.parse_frame(json.dumps([2, "late-1", "locked", locked(1, 104)]))
        assert isinstance(frame, wire.Call)
        await ref.ask(Incoming(link, frame))
        view = await view_of(ref)
        again = await r.connect(ref)
        await boot(ref, again)
        resent = await call(ref, again, "locked", locked(1, 104), call_id="late-1")
    assert r.sup.metrics.restarts_total == 0
    assert r.store.messages(1) == [("late-1", "locked")]  # recorded before the answer was tried
    assert view.spot(1) == SpotView(1, 101, vehicle=104, lock=1)
    assert resent == [3, "late-1", {"accepted": 0}]  # the resend gets the recorded answer


# --------------------------------------------------------------------------
# Supervision


async def test_a_crash_restarts_the_actor_from_the_store_with_its_live_link() -> None:
    async with rig(1, 2) as r:
        ref, link = await online_station(r)
        sibling, sibling_link = await online_station(r, 2)
        await call(ref, link, "state", state_payload({1: 101, 2: None, 3: 102, 4: None}))
        await call(ref, link, "locked", locked(4, 105))
        await call(sibling, sibling_link, "state", state_payload({2: 201}))
        sibling_before = await view_of(sibling)
        before = await view_of(ref)
        with pytest.raises(ActorCrashed):
            await ref.ask(Crash("drill"))
        after = await view_of(ref)
        served = await call(ref, link, "unexpected-unlock", {"spot": 1})  # no new boot needed
        command = await pending(ref, UnlockSpot(2))
        link.backend_call("unlock", spot=2).answer({"status": "accepted"})
        outcome = await command.wait()
        sibling_after = await view_of(sibling)
    assert r.sup.metrics.restarts_total == 1
    assert r.store.loads.count(1) == 2 and r.store.loads.count(2) == 1
    assert after.online and r.store.stations[1].online
    assert spots_of(after) == spots_of(before) == [(1, 101, 1), (2, None, 0), (3, 102, 1), (4, 105, 1)]
    assert after.vehicles == before.vehicles and after.firmware == before.firmware
    assert served[0] == wire.MessageType.RESULT and outcome == {"status": "accepted"}
    assert sibling_after == sibling_before and sibling_after.spot(2) == SpotView(2, 202, vehicle=201, lock=1)


async def test_after_a_restart_without_a_booted_link_the_station_is_offline() -> None:
    async with rig() as r:
        ref = await r.start()
        link = await r.connect(ref)  # connected, not booted
        r.store.stations[1].online = True  # a stale flag, left by an earlier process
        with pytest.raises(ActorCrashed):
            await ref.ask(Crash())
        view = await view_of(ref)
        answer = await boot(ref, link)
    assert not view.online and answer[2]["status"] == "accepted"
    assert r.store.stations[1].online


async def test_a_command_in_flight_when_the_actor_crashes_is_settled(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        command = await pending(ref, UnlockSpot(1))
        with pytest.raises(ActorCrashed):
            await ref.ask(Crash())
        outcome: dict[str, Any] | CommandFailed | None = None
        with trio.move_on_after(10 * CALL_TIMEOUT):  # virtual time: a hang fails the test, not the run
            outcome = await command.wait()
        link.backend_call("unlock", spot=1).answer({"status": "accepted"})  # too late: already settled
        await wait_all_tasks_blocked()
        after = await pending(ref, UnlockSpot(2))  # the restarted actor still commands over the link
        link.backend_call("unlock", spot=2).answer({"status": "accepted"})
        answered = await after.wait()
    assert isinstance(outcome, CommandFailed) and outcome.failure is Failure.OFFLINE
    assert await command.wait() is outcome
    assert answered == {"status": "accepted"}


async def test_a_restart_that_finds_the_link_gone_tells_the_listener() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        # The actor crashes just as the socket drops: the gateway removes the link, then sends Detached.
        ref.tell(Crash())
        link.lost()
        del r.links.links[1]
        ref.tell(Detached(link))
        view = await view_of(ref)
    assert r.sup.metrics.restarts_total == 1
    assert not view.online and not r.store.stations[1].online
    assert r.listener.names()[-1] == "station.offline"


# A store that fails (the database is down)


async def test_an_event_the_store_cannot_record_is_an_internal_error_and_the_actor_lives() -> None:
    async with rig(1, 2) as r:
        ref, link = await online_station(r)
        sibling, sibling_link = await online_station(r, 2)
        r.store.down = True
        failed = await call(ref, link, "locked", locked(2, 105), call_id="ev-1")
        view_while_down = await view_of(ref)
        r.store.down = False
        link.sent.clear()
        resent = await call(ref, link, "locked", locked(2, 105), call_id="ev-1")  # the station sends it again
        link.sent.clear()
        again = await call(ref, link, "locked", locked(2, 105), call_id="ev-1")
        sibling_answer = await call(sibling, sibling_link, "unexpected-unlock", {"spot": 1})
    assert failed[:3] == [4, "ev-1", "InternalError"]
    assert view_while_down.spot(2) == SpotView(2, 102)  # nothing applied
    assert resent == [3, "ev-1", {"accepted": 0}] and again == resent  # applied once, answered the same
    assert r.store.messages(1) == [("ev-1", "locked")]
    assert r.sup.metrics.restarts_total == 0
    assert sibling_answer[0] == wire.MessageType.RESULT


async def test_a_boot_the_store_cannot_record_is_refused_and_can_be_retried() -> None:
    async with rig() as r:
        ref = await r.start()
        link = await r.connect(ref)
        r.store.down = True
        refused = await boot(ref, link)
        early = await call(ref, link, "state", state_payload({}))
        r.store.down = False
        accepted = await boot(ref, link)
        view = await view_of(ref)
    assert refused[2] == "InternalError" and early[2] == "ProtocolError"
    assert accepted[2]["status"] == "accepted" and link.booted and view.online
    assert r.sup.metrics.restarts_total == 0


async def test_an_unlock_the_store_cannot_number_is_refused_and_the_actor_lives() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        r.store.down = True
        refused = await ref.ask(UnlockSpot(2))
        r.store.down = False
        link.sent.clear()
        retried = await pending(ref, UnlockSpot(2))
    assert isinstance(refused, CommandFailed) and refused.failure is Failure.UNAVAILABLE
    assert retried.unlock_id is not None
    assert r.sup.metrics.restarts_total == 0


async def test_a_station_leaving_while_the_store_is_down_goes_offline_in_memory() -> None:
    async with rig() as r:
        ref, link = await online_station(r)
        r.store.down = True
        await r.detach(ref, link)
        view = await view_of(ref)
        r.store.down = False
    assert not view.online and r.listener.names()[-1] == "station.offline"
    assert r.store.stations[1].online  # stale until the actor's next start reconciles it
    assert r.sup.metrics.restarts_total == 0
