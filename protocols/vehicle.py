"""The vehicle protocol (``vehicle-protocol.md``) as pure data.

The IoT module of a free-floating vehicle speaks the station protocol's
framing (``protocols.station``: OCPP-J CALL / RESULT / ERROR, the same ids,
the same ERROR codes, the same delivery guarantee) with its own actions and a
smaller frame limit (16 KiB). This module holds only what differs: the
transport constants, the actions and their payload models; framing is
:func:`protocols.station.parse_frame` and the writers of that module, called
with this protocol's tables (:func:`parse_frame`, :func:`call`).

Payload models are strict like the station's: a JSON ``"5"`` is not a number,
``true`` is not an integer, ``NaN`` is not JSON at all; positions are WGS 84
degrees within their ranges, times Unix epoch milliseconds, every integer
within the column it may be stored in.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field

from . import station as framing
from .station import (
    BootResult,
    BootStatus,
    Call,
    EmptyResult,
    Error,
    ErrorCode,
    Frame,
    FrameError,
    MessageType,
    Payload,
    Result,
    _enum,
    error,
    result,
)
from .station import UnlockResult as CommandResult
from .station import UnlockStatus as CommandStatus
from .wire import INT32_MAX, INT64_MAX, StorableText

__all__ = [
    "ACTIONS", "BACKEND_ACTIONS", "RESULTS", "VEHICLE_ACTIONS", "Action", "AlertKind", "AlertPayload",
    "AlertStatus", "BootPayload", "BootResult", "BootStatus", "Call", "CommandResult", "CommandStatus",
    "EmptyResult", "Error", "ErrorCode", "Frame", "FrameError", "LocatePayload", "LockPayload", "LockedPayload",
    "MessageType", "Payload", "Result", "RingPayload", "SpeedLimitPayload", "StatusPayload", "UnlockPayload",
    "UnlockedPayload", "call", "error", "parse_frame", "result",
]

# --------------------------------------------------------------------------
# Transport constants

SUBPROTOCOL: Final = "knot-vehicle.v1"
WS_PATH: Final = "/api/vehicles/ws"
MAX_FRAME_BYTES: Final = 16384
MAX_ID_LENGTH: Final = framing.MAX_ID_LENGTH
MIN_SECRET_LENGTH: Final = framing.MIN_SECRET_LENGTH
#: Longest serial number (the Basic-auth user); a serial holds no colon and no control character.
MAX_SERIAL_LENGTH: Final = 64
REPLACED: Final = framing.REPLACED
SECRET_ROTATED: Final = framing.SECRET_ROTATED
TRY_AGAIN_LATER: Final = framing.TRY_AGAIN_LATER
DEFAULT_PING_INTERVAL: Final = framing.DEFAULT_PING_INTERVAL
MISSED_PONGS_LIMIT: Final = framing.MISSED_PONGS_LIMIT
DEFAULT_CALL_TIMEOUT: Final = framing.DEFAULT_CALL_TIMEOUT
#: Seconds between two ``status`` reports a vehicle is asked for (the boot RESULT's ``heartbeat_interval``).
DEFAULT_HEARTBEAT_INTERVAL: Final = 60
#: Highest speed limit the backend sends, km/h.
MAX_SPEED_LIMIT: Final = 255


class Action(StrEnum):
    # vehicle -> backend
    BOOT = "boot"
    STATUS = "status"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    ALERT = "alert"
    # backend -> vehicle
    UNLOCK = "unlock"
    LOCK = "lock"
    LOCATE = "locate"
    RING = "ring"
    SPEED_LIMIT = "speed-limit"


class AlertKind(StrEnum):
    FALL = "fall"
    TOW = "tow"
    TAMPER = "tamper"
    LOW_BATTERY = "low-battery"


class AlertStatus(StrEnum):
    APPEARING = "appearing"
    DISAPPEARED = "disappeared"


def valid_serial(serial: str) -> bool:
    """A serial number a vehicle may authenticate with: 1..64 printable characters, no colon."""
    return 0 < len(serial) <= MAX_SERIAL_LENGTH and serial.isprintable() and ":" not in serial


# --------------------------------------------------------------------------
# Field types

Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
EpochMs = Annotated[int, Field(ge=0, le=INT64_MAX)]
Millivolts = Annotated[int, Field(ge=0, le=INT32_MAX)]
Percent = Annotated[int, Field(ge=0, le=100)]
Kmh = Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False)]
CommandId = Annotated[int, Field(ge=1, le=INT64_MAX)]
EchoedId = Annotated[int, Field(ge=0, le=INT64_MAX)]  # 0: not in answer to a command


# --------------------------------------------------------------------------
# Payload models


# vehicle -> backend ------------------------------------------------------


class BootPayload(Payload):
    firmware_version: StorableText
    model: StorableText


class StatusPayload(Payload):
    lat: Latitude
    lng: Longitude
    battery: Percent
    voltage: Millivolts
    speed: Kmh
    locked: bool
    time: EpochMs


class LockedPayload(Payload):
    lat: Latitude
    lng: Longitude
    time: EpochMs
    lock: EchoedId  # the `lock` command's id, 0 if the vehicle locked without one


class UnlockedPayload(Payload):
    unlock: EchoedId  # the `unlock` command's id, 0 if none
    time: EpochMs


class AlertPayload(Payload):
    alert: Annotated[AlertKind, _enum(AlertKind)]
    alert_status: Annotated[AlertStatus, _enum(AlertStatus)]
    lat: Latitude
    lng: Longitude
    time: EpochMs


# backend -> vehicle ------------------------------------------------------


class UnlockPayload(Payload):
    unlock: CommandId


class LockPayload(Payload):
    lock: CommandId


class LocatePayload(Payload):
    pass


class RingPayload(Payload):
    pass


class SpeedLimitPayload(Payload):
    kmh: Annotated[int, Field(ge=0, le=MAX_SPEED_LIMIT)]  # 0: no limit


#: CALLs a vehicle sends (what the backend accepts): action -> payload model.
VEHICLE_ACTIONS: Final[Mapping[str, type[Payload]]] = {
    Action.BOOT: BootPayload,
    Action.STATUS: StatusPayload,
    Action.LOCKED: LockedPayload,
    Action.UNLOCKED: UnlockedPayload,
    Action.ALERT: AlertPayload,
}

#: CALLs the backend sends (what a vehicle accepts): action -> payload model.
BACKEND_ACTIONS: Final[Mapping[str, type[Payload]]] = {
    Action.UNLOCK: UnlockPayload,
    Action.LOCK: LockPayload,
    Action.LOCATE: LocatePayload,
    Action.RING: RingPayload,
    Action.SPEED_LIMIT: SpeedLimitPayload,
}

ACTIONS: Final[Mapping[str, type[Payload]]] = {**VEHICLE_ACTIONS, **BACKEND_ACTIONS}

#: The RESULT payload model of each action.
RESULTS: Final[Mapping[str, type[Payload]]] = {
    **{action: EmptyResult for action in Action},
    Action.BOOT: BootResult,
    Action.UNLOCK: CommandResult,
    Action.LOCK: CommandResult,
}


def parse_frame(text: str | bytes, *, actions: Mapping[str, type[Payload]] = VEHICLE_ACTIONS) -> Frame:
    """Parse one vehicle frame (``VEHICLE_ACTIONS``: the backend's view; ``BACKEND_ACTIONS``: a vehicle's);
    raise :class:`FrameError` with the ERROR to answer."""
    return framing.parse_frame(text, actions=actions, action_type=Action, max_bytes=MAX_FRAME_BYTES)


def call(id: str, action: str, payload: Payload) -> str:
    """A CALL frame of this protocol; ``payload`` must be the model of ``action``."""
    return framing.call(id, action, payload, actions=ACTIONS)
