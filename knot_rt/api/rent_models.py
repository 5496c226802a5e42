"""The shapes of a rent: the logged-in map's ``rents`` (spec row 61) and the rider's history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExternalLockOut(_Strict):
    external_lock_id: int
    model: str
    type: str
    code: str


class RentOut(_Strict):
    vehicle_id: int
    serial_number: str
    free_floating: bool
    being_rented: bool = Field(description="ongoing and not on hold")
    displayed_number: int | None = Field(description="the spot's number while the vehicle is docked")
    lock_status: int | None = Field(
        description="0 open, 1 closed: the spot's lock while docked, a free-floating vehicle's own lock"
    )
    trip_id: int
    time_start: datetime
    billing_time_stop: datetime | None
    on_hold_since: datetime | None = Field(description="since when a free-floating rent is paused")
    on_hold_activated: bool
    network_id: int
    battery_level: int | None
    min_battery_to_slow_down: int
    min_battery_to_auto_lock: int
    avg_max_range: int
    external_locks: list[ExternalLockOut]
    vehicle_model_id: int | None
    vehicle_model_name: str | None
    vehicle_manufacturer: str | None
    vehicle_type: str


class RentRecordOut(RentOut):
    """A rent of the rider's history: the map's fields, its end and its price."""

    state: Literal["unlocking", "ongoing", "paused", "ended"]
    via: Literal["app", "badge"] = Field(description="how it was unlocked")
    time_stop: datetime | None = Field(description="when it ended (None while current)")
    duration: int | None = Field(description="billed seconds, from time_start to billing_time_stop")
    currency: str | None
    price: float | None = Field(description="unlock fee plus the started minutes, set when it ends")
    paid_by_wallet: float | None = Field(description="the part paid with wallet credit (discounts)")
    amount_due: float | None = Field(description="the rest, charged by the payments part")
    end_latitude: float | None = Field(description="where a free-floating rent ended")
    end_longitude: float | None
    ended_by: Literal["rider", "station", "auto_lock", "max_pause"] | None = Field(
        description="who ended it: the rider, or a trip timer (auto_lock, max_pause)"
    )
