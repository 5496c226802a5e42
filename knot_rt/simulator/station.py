"""A simulated docking station (``station-protocol.md``) and a fleet of them.

What is a station's own lives here; the connection, the outbox and the
reconnects are the shared device's (``device.py``). A :class:`SimulatedStation`
has spots holding vehicles behind locks, boots with fixed boards, reports a
fixed mainboard, connectivity and vehicle voltage in its ``state`` (the
heartbeat event), raises events when something happens at it
(:meth:`~SimulatedStation.return_vehicle` -> ``locked``,
:meth:`~SimulatedStation.badge` -> ``badge-rfid``, ``alert``, ``fault``,
``unexpected-unlock``, ``state``), and answers the backend's CALLs:

- ``ping``: RESULT, then a ``state``;
- ``reboot``: RESULT, then the connection closes and the station boots again;
- ``unlock``: ``accepted`` when a vehicle is docked at the spot (the lock
  opens, the vehicle leaves, ``unlocked`` follows), else ``rejected``; with
  ``ride`` set, a rider brings the vehicle back after that many seconds (see
  :meth:`~SimulatedStation.ride_back`);
- ``refresh``: RESULT, then ``locked`` again for each docked vehicle (of the
  spot, or of all spots);
- ``badge-feedback``: RESULT, kept in :attr:`~SimulatedStation.badge_feedback`;
- ``config``: RESULT, applied, then ``configured``.

A ``locked`` answered DENY releases the vehicle again (lock open, spot empty,
``unlocked`` with ``unlock`` 0), as the firmware does.

:class:`Simulator` is the station fleet: one station per ``(id, secret)``,
spots 1..n holding vehicle ``id * 100 + spot`` at start.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Unpack

import trio

from protocols import station as st

from .device import Changes, DeviceOptions, DeviceProtocol, Reply, SimulatedDevice, gateway_url
from .fleet import Fleet
from .outbox import Delivery

DEFAULT_SPOTS: Final = 8
DEFAULT_BATTERY: Final = 80
MAINBOARD_FIRMWARE: Final = "knot-sim 1.0"
MAINBOARD_REVISION: Final = "B2"
SPOT_FIRMWARE: Final = "knot-sim-spot 1.0"
SPOT_REVISION: Final = "A1"
MAINBOARD_STATE: Final = st.MainboardState(v5=5020, v48=48150, temp=24.5)
CONNECTIVITY: Final = st.Connectivity(type=st.ConnectivityType.CAT_M1, rssi=-71, rsrp=-96)
VEHICLE_VOLTAGE: Final = 41800  # mV

STATION_PROTOCOL: Final = DeviceProtocol(
    name="station",
    subprotocol=st.SUBPROTOCOL,
    max_frame_bytes=st.MAX_FRAME_BYTES,
    actions=st.ACTIONS,
    action_type=st.Action,
    backend_actions=st.BACKEND_ACTIONS,
    results=st.RESULTS,
)


def default_url() -> str:
    """``ws://127.0.0.1:<KNOT_STATION_PORT or 8001>/api/stations/ws``."""
    return gateway_url(st.WS_PATH)


def default_vehicles(station_id: int, occupied: int) -> dict[int, int]:
    """Spots 1..``occupied`` hold vehicle ``station_id * 100 + spot``."""
    return {spot: station_id * 100 + spot for spot in range(1, occupied + 1)}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SpotStatus:
    spot: int
    vehicle: int | None
    lock: st.Lock
    battery: int | None


class _Spot:
    __slots__ = ("battery", "lock", "vehicle")

    def __init__(self, vehicle: int | None, battery: int | None) -> None:
        self.vehicle = vehicle
        self.lock = st.Lock.CLOSED if vehicle is not None else st.Lock.OPEN
        self.battery = battery if vehicle is not None else None

    def empty(self) -> None:
        """The vehicle leaves: the lock is open, the spot empty."""
        self.vehicle, self.lock, self.battery = None, st.Lock.OPEN, None


class StationOptions(DeviceOptions, total=False):
    """The keyword options a fleet passes to each of its stations."""

    battery: int
    ride: float | None


class SimulatedStation(SimulatedDevice):
    """One simulated docking station; ``await run()`` until it stops."""

    protocol = STATION_PROTOCOL

    def __init__(
        self,
        station_id: int,
        secret: str,
        url: str | None = None,
        *,
        spots: int = DEFAULT_SPOTS,
        vehicles: Mapping[int, int] | None = None,
        battery: int = DEFAULT_BATTERY,
        ride: float | None = None,
        changed: Changes | None = None,
        **options: Unpack[DeviceOptions],
    ) -> None:
        """
        ``vehicles`` maps spot number -> vehicle id of the vehicles docked at start;
        ``battery`` is their charge; ``ride``: seconds after which a vehicle
        unlocked here is docked back (None: never, the caller returns vehicles
        with :meth:`return_vehicle`). Other options (``heartbeat``, ``backoff_min``,
        ``backoff_max``, ``call_timeout``, ``stop_when_replaced``) are the
        device's (:class:`~knot_rt.simulator.device.SimulatedDevice`).
        """
        if not 1 <= spots <= st.MAX_SPOTS:
            raise ValueError(f"spots must be 1..{st.MAX_SPOTS}, not {spots}")
        if ride is not None and ride < 0:
            raise ValueError(f"ride must be at least 0 seconds, not {ride}")
        vehicles = dict(vehicles or {})
        for spot in vehicles:
            if not 1 <= spot <= spots:
                raise ValueError(f"vehicle at spot {spot}, but the station has spots 1..{spots}")
        super().__init__(station_id, secret, url or default_url(), changed=changed, **options)
        self.station_id = station_id
        self.battery = battery
        self.ride = ride
        self._rides: trio.Nursery | None = None
        #: ``config`` values applied so far (``"volume"`` / ``"alarm-threshold"`` -> value).
        self.config: dict[str, int] = {}
        #: The ``badge-feedback`` payloads received, oldest first (the last 16).
        self.badge_feedback: deque[st.BadgeFeedbackPayload] = deque(maxlen=16)
        self._spots = {n: _Spot(vehicles.get(n), battery) for n in range(1, spots + 1)}

    # ------------------------------------------------------------------
    # Read-only view

    def spot(self, number: int) -> SpotStatus:
        s = self._spot(number)
        return SpotStatus(number, s.vehicle, s.lock, s.battery)

    @property
    def spots(self) -> list[SpotStatus]:
        return [self.spot(number) for number in self._spots]

    def _spot(self, number: int) -> _Spot:
        try:
            return self._spots[number]
        except KeyError:
            raise ValueError(f"station {self.station_id} has no spot {number}") from None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """As the device's; with ``ride``, the rides of vehicles unlocked here run beside it until it stops."""
        if self.ride is None:
            await super().run(task_status=task_status)
            return
        async with trio.open_nursery() as self._rides:
            await super().run(task_status=task_status)
            self._rides.cancel_scope.cancel()

    # ------------------------------------------------------------------
    # Things that happen at the station

    async def ride_back(self, spot: int, vehicle: int) -> None:
        """A rider who took ``vehicle`` from ``spot`` docks it back after ``ride`` seconds: into that spot if it
        is still free, else into the first free one (none free: the rider keeps it)."""
        assert self.ride is not None
        await trio.sleep(self.ride)
        free = [number for number, s in self._spots.items() if s.vehicle is None]
        if free:
            await self.return_vehicle(spot if spot in free else free[0], vehicle)

    async def return_vehicle(
        self, spot: int, vehicle: int, *, battery: int | None = None, cache_accepted: bool = False
    ) -> Delivery:
        """A vehicle is docked at ``spot``: the lock closes and ``locked`` is sent.

        If the RESULT says DENY, the station releases the vehicle again (lock
        open, spot empty) and sends ``unlocked`` with ``unlock`` 0.
        """
        await trio.lowlevel.checkpoint()
        s = self._spot(spot)
        if s.vehicle is not None:
            raise ValueError(f"spot {spot} of station {self.station_id} already holds vehicle {s.vehicle}")
        s.vehicle, s.lock, s.battery = vehicle, st.Lock.CLOSED, self.battery if battery is None else battery
        return self._locked(spot, vehicle, cache_accepted=cache_accepted)

    async def badge(self, badge_id: str, spot: int | None = None) -> Delivery:
        """A badge is presented: ``badge-rfid``."""
        await trio.lowlevel.checkpoint()
        return self._enqueue(st.Action.BADGE_RFID, st.BadgeRfidPayload(badge_id=badge_id, spot=spot))

    async def alert(
        self, alert: st.Alert | int, status: st.AlertStatus | str = st.AlertStatus.APPEARING, spot: int | None = None
    ) -> Delivery:
        await trio.lowlevel.checkpoint()
        kind = st.Alert(alert)
        payload = st.AlertPayload(alert=kind, alert_name=kind.label, alert_status=st.AlertStatus(status), spot=spot)
        return self._enqueue(st.Action.ALERT, payload)

    async def fault(self, fault: st.Fault | int, status: str, spot: int) -> Delivery:
        await trio.lowlevel.checkpoint()
        kind = st.Fault(fault)
        payload = st.FaultPayload(fault=kind, fault_name=kind.label, fault_status=status, spot=spot)
        return self._enqueue(st.Action.FAULT, payload)

    async def unexpected_unlock(self, spot: int) -> Delivery:
        """The locker of ``spot`` opened without a command (the vehicle stays)."""
        await trio.lowlevel.checkpoint()
        self._spot(spot).lock = st.Lock.OPEN
        return self._enqueue(st.Action.UNEXPECTED_UNLOCK, st.UnexpectedUnlockPayload(spot=spot))

    async def send_state(self) -> Delivery:
        await trio.lowlevel.checkpoint()
        return self._enqueue(*self.heartbeat_event())

    def _locked(self, spot: int, vehicle: int, *, cache_accepted: bool = False) -> Delivery:
        return self._enqueue(
            st.Action.LOCKED,
            st.LockedPayload(spot=spot, vehicle=vehicle, time=_now_ms(), cache_accepted=cache_accepted),
        )

    def _unlocked(self, spot: int, unlock: int, vehicle: int) -> Delivery:
        return self._enqueue(st.Action.UNLOCKED, st.UnlockedPayload(spot=spot, unlock=unlock, vehicle=vehicle))

    # ------------------------------------------------------------------
    # The device hooks

    def boot_payload(self) -> st.BootPayload:
        spot = st.BoardInfo(firmware_version=SPOT_FIRMWARE, board_revision=SPOT_REVISION)
        return st.BootPayload(
            mainboard=st.BoardInfo(firmware_version=MAINBOARD_FIRMWARE, board_revision=MAINBOARD_REVISION),
            spots=[spot] * len(self._spots),
        )

    def heartbeat_event(self) -> tuple[str, st.StatePayload]:
        spots = [st.SpotState(spot=n, vehicle=s.vehicle, lock=s.lock) for n, s in self._spots.items()]
        vehicles = [
            st.VehicleState(vehicle=s.vehicle, voltage=VEHICLE_VOLTAGE, battery=s.battery)
            for s in self._spots.values()
            if s.vehicle  # 0: the id could not be read
        ]
        return st.Action.STATE, st.StatePayload(
            mainboard=MAINBOARD_STATE, spots=spots, vehicles=vehicles, connectivity=CONNECTIVITY)

    async def on_call(self, call: st.Call, reply: Reply) -> None:
        payload = call.payload
        if call.action is st.Action.PING:
            await reply.result()
            self._enqueue(*self.heartbeat_event())
        elif call.action is st.Action.REBOOT:
            await reply.result()
            reply.reboot()
        elif isinstance(payload, st.UnlockPayload):
            s = self._spots.get(payload.spot)
            if s is None or s.vehicle is None:
                await reply.result(st.UnlockResult(status=st.UnlockStatus.REJECTED))
                return
            await reply.result(st.UnlockResult(status=st.UnlockStatus.ACCEPTED))
            vehicle = s.vehicle
            s.empty()  # the locker opens, the vehicle leaves
            self._unlocked(payload.spot, payload.unlock, vehicle)
            if self._rides is not None:
                self._rides.start_soon(self.ride_back, payload.spot, vehicle)
        elif isinstance(payload, st.RefreshPayload):
            await reply.result()
            for number, s in self._spots.items():
                if s.vehicle is not None and payload.spot in (None, number):
                    self._locked(number, s.vehicle)
        elif isinstance(payload, st.BadgeFeedbackPayload):
            await reply.result()
            self.badge_feedback.append(payload)
        elif isinstance(payload, st.ConfigPayload):
            await reply.result()
            self.config[str(payload.config)] = payload.value
            self._enqueue(st.Action.CONFIGURED, st.ConfiguredPayload(type=payload.config, value=payload.value))
        else:  # parse_frame only lets the protocol's backend actions through
            await reply.error(st.ErrorCode.NOT_IMPLEMENTED, f"unknown action {call.action!r}")

    def on_acknowledged(self, delivery: Delivery, result: st.Payload) -> None:
        if isinstance(result, st.LockedResult) and result.accepted is st.LockAccepted.DENY:
            assert isinstance(delivery.payload, st.LockedPayload)
            self._release(delivery.payload)

    def _release(self, locked: st.LockedPayload) -> None:
        """The backend denied a docked vehicle: open the lock, the spot is empty."""
        s = self._spots.get(locked.spot)
        if s is None or s.vehicle != locked.vehicle or s.lock is not st.Lock.CLOSED:
            return  # the vehicle has already gone
        s.empty()
        self._unlocked(locked.spot, 0, locked.vehicle)


class Simulator(Fleet[SimulatedStation]):
    """Many :class:`SimulatedStation` in one nursery (one task tree each, no threads)."""

    def __init__(
        self,
        url: str | None,
        stations: Iterable[tuple[int, str]],
        *,
        spots: int = DEFAULT_SPOTS,
        vehicles: int | None = None,
        ramp: float = 0.0,
        **options: Unpack[StationOptions],
    ) -> None:
        """
        ``vehicles``: how many spots of each station hold a vehicle at start
        (spots 1..n, vehicle ids from :func:`default_vehicles`; default: half
        the spots). ``ramp``: seconds over which the stations are started.
        Other keyword options go to every :class:`SimulatedStation`.
        """
        occupied = spots // 2 if vehicles is None else vehicles
        if not 0 <= occupied <= spots:
            raise ValueError(f"vehicles must be 0..{spots}")
        super().__init__(ramp=ramp, noun="stations")
        self.url = url or default_url()
        self._by_id: dict[int, SimulatedStation] = {}
        for station_id, secret in stations:
            if station_id in self._by_id:
                raise ValueError(f"station {station_id} is given twice")
            station = SimulatedStation(
                station_id, secret, self.url, spots=spots, vehicles=default_vehicles(station_id, occupied),
                changed=self.changes, **options,
            )
            self.add(station)
            self._by_id[station_id] = station

    @property
    def stations(self) -> list[SimulatedStation]:
        return self.devices

    def station(self, station_id: int) -> SimulatedStation:
        return self._by_id[station_id]
