"""``PgRentBook``: the vehicle actors' ``RentBook`` on PostgreSQL.

Every transition is one unit of work: the rent's row (``store.py``) and the
rider's feed events on the ``user`` topic (``rent.started`` and
``vehicle.unlocked``; ``unlock.failed``; ``rent.paused``; ``rent.resumed``;
``vehicle.locked`` and ``rent.ended`` with the price, where it ended and who
ended it; ``rent.too_long``), delivered after the commit. The rider's row is
locked while a rent is reserved (the network's maximum is counted under it, so
five unlocks fired at once never pass it) and while one is priced (wallet
credit is spent once).

Free-floating rents (``actors/vehicle.py``): a resume, pause or end is first
recorded on the rent as a command with a fresh id (``command``), then sent; the
vehicle's report that echoes the id pauses, resumes or ends it. A report the
gateway recorded while no actor held the rent is found in ``vehicle_messages``
(``reported``). Every ``Rent`` this book returns carries its network's trip
rules as they are when it is read (``store.rent_of``).

Money (``payments/jobs.py``): on a network whose ``min_guarantee`` > 0 a reservation takes the rider's
usable guarantee under the rider's lock (none, or payments not configured: 402/33) and ties it to the rent;
a failed unlock gives it back (``guarantee.updated``); the end decides in its own transaction, from the
price after wallet credit, the capture or release job the payments worker runs (``guarantee.updated``,
and ``amount_owed`` on ``rent.ended`` for a guaranteed rent), then wakes the worker after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from actors.rent import CommandKind, Rent, RentRefused, RentRequest, RentState, Return
from protocols.errors import ErrorCode
from protocols.feed import EventName, Topic

from ..payments import jobs as payment_jobs
from ..uow import UnitOfWork, Work
from . import store
from .pricing import Tariff, price_of


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def rent_data(rent: Rent) -> dict[str, Any]:
    """The fields every rent event carries."""
    return {
        "trip_id": rent.rent_id, "vehicle_id": rent.vehicle_id, "network_id": rent.network_id,
        "state": rent.state.value, "station_id": rent.station_id, "spot": rent.spot,
        "time_start": _ms(rent.time_start), "free_floating": rent.free_floating,
    }


class PgRentBook:
    """``renting``: the vehicles with a current rent, read once at start (``load_renting``) and kept by
    this book's own transitions, so that the start of a vehicle's actor without a rent (thousands when
    the stations reconnect) costs no query for its rent. Until it is read, every start asks the database.
    (One process writes the rents of the vehicles whose actors it runs; scale-out keeps that true.)

    ``guarantees``: whether payments are configured (else a network that requires a guarantee refuses every
    rent, 402/33); ``guarantee_margin``: a guarantee's hold must last at least this long after the unlock;
    ``on_payment_job``: called after a commit that wrote a capture or release job (the worker's ``wake``)."""

    def __init__(self, work: Work, *, guarantees: bool = False, guarantee_margin: timedelta = timedelta(hours=36),
                 on_payment_job: Callable[[], None] | None = None) -> None:
        self._work = work
        self._db = work.db
        self.guarantees = guarantees
        self.guarantee_margin = guarantee_margin
        self.on_payment_job = on_payment_job
        self.renting: set[int] | None = None
        self._while_loading: dict[int, bool] | None = None

    async def load_renting(self) -> list[int]:
        """Read the vehicles with a current rent; transitions made while reading win over the read."""
        self._while_loading = {}
        try:
            vehicle_ids = await self._db.run(store.vehicles_with_current_rents)
            renting = set(vehicle_ids)
            for vehicle_id, holds in self._while_loading.items():
                (renting.add if holds else renting.discard)(vehicle_id)
        finally:
            self._while_loading = None
        self.renting = renting
        return vehicle_ids

    def _holds(self, vehicle_id: int, holds: bool) -> None:
        if self._while_loading is not None:
            self._while_loading[vehicle_id] = holds
        if self.renting is not None:
            (self.renting.add if holds else self.renting.discard)(vehicle_id)

    async def current(self, vehicle_id: int) -> Rent | None:
        if self.renting is not None and vehicle_id not in self.renting:
            return None
        return await self._db.run(lambda conn: store.current_rent(conn, vehicle_id))

    async def reserve(self, vehicle_id: int, request: RentRequest) -> Rent | RentRefused:
        async def reserve(uow: UnitOfWork) -> Rent | RentRefused:
            conn = uow.conn
            if not await store.lock_rider(conn, request.user_id):
                return RentRefused(ErrorCode.INVALID_TOKEN, "the account is gone")
            rules = await store.network_rules(conn, request.network_id)
            if rules is None:
                return RentRefused(ErrorCode.NOT_ALLOWED, f"no network {request.network_id}")
            current = await store.current_rents_of(conn, request.user_id, request.network_id)
            if current >= rules["max_simultaneous_rented_vehicle"]:
                return RentRefused(ErrorCode.TOO_MANY_RENTS,
                                   f"at most {rules['max_simultaneous_rented_vehicle']} ongoing rents on this network")
            guarantee_id: int | None = None
            if rules["min_guarantee"] > 0:
                if not self.guarantees:
                    return RentRefused(ErrorCode.GUARANTEE_REQUIRED,
                                       "this network requires a bank guarantee (payments are not configured)")
                guarantee_id = await payment_jobs.pick_guarantee(
                    conn, request.user_id, request.network_id, rules["min_guarantee"], self.guarantee_margin)
                if guarantee_id is None:
                    return RentRefused(ErrorCode.GUARANTEE_REQUIRED, "this network requires a bank guarantee")
            rent = await store.insert_unlocking(conn, vehicle_id, request)
            if rent is None:
                return RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {vehicle_id} is rented")
            if guarantee_id is not None:
                await payment_jobs.attach(conn, guarantee_id, rent.rent_id)
            return rent

        outcome = await self._work.run(reserve)
        if isinstance(outcome, Rent):
            self._holds(vehicle_id, True)
        return outcome

    async def start(self, rent: Rent) -> Rent:
        topic = Topic.user(rent.user_id)

        async def start(uow: UnitOfWork) -> Rent:
            started = await store.mark_started(uow.conn, rent.rent_id)
            if started is None:  # no longer unlocking (a duplicate report): as the book has it
                return await store.current_rent(uow.conn, rent.vehicle_id) or rent
            data = rent_data(started)
            await uow.publish(topic, EventName.VEHICLE_UNLOCKED, data)
            await uow.publish(topic, EventName.RENT_STARTED, data)
            return started

        return await self._work.run(start, topics=[topic])

    async def fail(self, rent: Rent, reason: str) -> None:
        topic = Topic.user(rent.user_id)

        async def fail(uow: UnitOfWork) -> None:
            if await store.mark_failed(uow.conn, rent.rent_id, reason):
                await uow.publish(topic, EventName.UNLOCK_FAILED, {**rent_data(rent), "state": "failed",
                                                                   "reason": reason})
                given_back = await payment_jobs.give_back(uow.conn, rent.rent_id)
                if given_back is not None:
                    await uow.publish(topic, EventName.GUARANTEE_UPDATED,
                                      payment_jobs.guarantee_data(given_back, trip_id=rent.rent_id))

        await self._work.run(fail, topics=[topic])
        self._holds(rent.vehicle_id, False)

    async def end(self, rent: Rent, returned: Return) -> Rent:
        """ongoing/paused -> ended at the return's time (kept between the start and now), priced.

        Where: a station's spot (docked) or a position (free-floating), and who ended it
        (``returned.ended_by``), recorded and carried by ``vehicle.locked`` and ``rent.ended``.
        Billing runs from ``time_start`` to the return, paused time included: a pause keeps the vehicle
        from everyone else, so it is billed like riding time (the network's ``trip_max_pause`` bounds it)."""
        topic = Topic.user(rent.user_id)

        async def end(uow: UnitOfWork) -> Rent:
            conn = uow.conn
            await store.lock_rider(conn, rent.user_id)
            row = await store.riding_rent(conn, rent.rent_id)
            if row is None:  # ended already (a resent report): nothing twice
                return rent
            rules = await store.network_rules(conn, rent.network_id)
            assert rules is not None
            stop = await store.billing_stop(conn, rent.rent_id, returned.at_ms)
            tariff = Tariff(rules["currency"], rules["unlock_fee"], rules["price_per_minute"])
            wallet = await store.wallet_balance(conn, rent.user_id, tariff.currency)
            price = price_of(tariff, (stop - row["time_start"]).total_seconds(), wallet)
            if price.paid_by_wallet > 0:
                await store.spend_wallet(conn, rent.user_id, rent.rent_id, price.paid_by_wallet, tariff.currency)
            ended = await store.mark_ended(
                conn, rent.rent_id, stop, returned, currency=price.currency, price=price.price,
                paid_by_wallet=price.paid_by_wallet, amount_due=price.amount_due,
            )
            settled = await payment_jobs.settle_rent(conn, rent.rent_id, price.amount_due)
            owed = {} if settled is None else {"amount_owed": _amount(settled.owed)}
            base = {**rent_data(rent), "state": "ended"}
            at = {"end_station_id": returned.station_id, "end_spot": returned.spot,
                  "latitude": returned.latitude, "longitude": returned.longitude,
                  "ended_by": returned.ended_by.value, "billing_time_stop": int(stop.timestamp() * 1000)}
            await uow.publish(topic, EventName.VEHICLE_LOCKED, {**base, **at})
            await uow.publish(topic, EventName.RENT_ENDED, {
                **base, **at, "duration": price.billed_seconds, "currency": price.currency,
                "price": _amount(price.price), "paid_by_wallet": _amount(price.paid_by_wallet),
                "amount_due": _amount(price.amount_due), "ended_at": int(ended["ended_at"].timestamp() * 1000),
                **owed,
            })
            if settled is not None:
                await uow.publish(topic, EventName.GUARANTEE_UPDATED,
                                  payment_jobs.guarantee_data(settled.guarantee, trip_id=rent.rent_id))
                if settled.job is not None and self.on_payment_job is not None:
                    uow.after(self.on_payment_job)
            return rent

        await self._work.run(end, topics=[topic])
        self._holds(rent.vehicle_id, False)
        return rent

    async def released(self, rent: Rent) -> bool:
        """Has a station recorded the ``unlocked`` of this docked rent's unlock id?"""
        unlock_id = rent.unlock_id
        if unlock_id is None:
            return False
        return await self._db.run(lambda conn: store.unlocked_recorded(conn, unlock_id))

    async def returned(self, rent: Rent) -> Return | None:
        if rent.time_start is None:
            return None
        return await self._db.run(lambda conn: store.locked_recorded(conn, rent))

    async def warn_too_long(self, rent: Rent) -> Rent:
        topic = Topic.user(rent.user_id)

        async def warn(uow: UnitOfWork) -> Rent:
            warned = await store.mark_warned(uow.conn, rent.rent_id)
            if warned is None:
                return rent
            await uow.publish(topic, EventName.RENT_TOO_LONG, {**rent_data(warned),
                                                                "trip_too_long": warned.too_long_after})
            return warned

        return await self._work.run(warn, topics=[topic])

    # free-floating --------------------------------------------------------------------------

    async def command(self, rent: Rent, kind: CommandKind) -> Rent:
        """Record a resume, pause or end with a fresh id (replacing an earlier command), before it is sent.

        ``CommandKind.UNLOCK`` is not recorded here: the start's id is the rent's ``unlock_id``. Raises
        ``RentNotRiding`` when the rent is not ongoing or paused (the actor's copy is then stale)."""
        if kind is CommandKind.UNLOCK:
            raise ValueError("an unlock is the rent's own unlock_id; record a resume instead")
        recorded = await self._work.run(lambda uow: store.record_command(uow.conn, rent.rent_id, kind))
        if recorded is None:
            raise RentNotRiding(f"rent {rent.rent_id} is not riding: no {kind.value} for it")
        return recorded

    async def pause(self, rent: Rent, at_ms: int) -> Rent:
        """ongoing -> paused, on hold from ``at_ms`` (the vehicle's ``locked`` time, kept between the start
        and now); clears the command; ``rent.paused``. A rent not ongoing: as the book has it."""
        topic = Topic.user(rent.user_id)

        async def pause(uow: UnitOfWork) -> Rent:
            paused = await store.mark_paused(uow.conn, rent.rent_id, at_ms)
            if paused is None:
                return await store.current_rent(uow.conn, rent.vehicle_id) or rent
            await uow.publish(topic, EventName.RENT_PAUSED, {**rent_data(paused),
                                                              "on_hold_since": _ms(paused.paused_at)})
            return paused

        return await self._work.run(pause, topics=[topic])

    async def resume(self, rent: Rent) -> Rent:
        """paused -> ongoing; clears the command; ``rent.resumed``. A rent not paused: as the book has it."""
        topic = Topic.user(rent.user_id)

        async def resume(uow: UnitOfWork) -> Rent:
            resumed = await store.mark_resumed(uow.conn, rent.rent_id)
            if resumed is None:
                return await store.current_rent(uow.conn, rent.vehicle_id) or rent
            await uow.publish(topic, EventName.RENT_RESUMED, rent_data(resumed))
            return resumed

        return await self._work.run(resume, topics=[topic])

    async def moved(self, rent: Rent, at: float) -> Rent:
        """Record the riding vehicle's last movement (no event: the rider knows they are riding)."""
        moved = await self._work.run(lambda uow: store.mark_moved(uow.conn, rent.rent_id, at))
        return moved or rent

    async def reported(self, rent: Rent) -> Return | bool:
        """What the vehicle's module recorded (``vehicle_messages``, as the gateway writes them) for the
        rent's pending unlock or command: its ``unlocked`` of the unlock (start) or of a resume -> True;
        its ``locked`` of a pause or end -> the ``Return`` (its time and position); else False.

        A pause command on a rent paused already (the trip timer pauses the rent in the book first, then
        sends the ``lock``) has nothing left to report: False, so the clock goes on to the rent's timers."""
        vehicle_id = rent.vehicle_id
        if rent.state is RentState.UNLOCKING:
            unlock_id = rent.unlock_id
            if unlock_id is None:
                return False
            return await self._db.run(lambda conn: store.vehicle_unlocked(conn, vehicle_id, unlock_id))
        command_id = rent.command_id
        if command_id is None or not rent.state.riding:
            return False
        if rent.command is CommandKind.RESUME:
            return await self._db.run(lambda conn: store.vehicle_unlocked(conn, vehicle_id, command_id))
        if rent.command is CommandKind.PAUSE and rent.state is RentState.PAUSED:
            return False  # paused already (a timer's pause, its `lock` sent after it): nothing left to report
        if rent.command in (CommandKind.PAUSE, CommandKind.END):
            locked = await self._db.run(lambda conn: store.vehicle_locked(conn, vehicle_id, command_id))
            return False if locked is None else locked
        return False


class RentNotRiding(RuntimeError):
    """A command for a rent that is no longer ongoing or paused."""


def _amount(value: Decimal) -> float:
    return float(value)
