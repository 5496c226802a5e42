"""The station protocol (``station-protocol.md``) as pure data.

OCPP-J framing over a WebSocket, subprotocol ``knot-station.v1``:

- CALL   ``[2, "<id>", "<action>", {payload}]``
- RESULT ``[3, "<id>", {payload}]``
- ERROR  ``[4, "<id>", "<error_code>", "<description>", {details}]``

:func:`parse_frame` turns one text frame into a :class:`Call`, :class:`Result`
or :class:`Error`, validating a CALL's payload against the model of its action.
A bad frame raises :class:`FrameError`, which carries the ERROR frame to answer
with. :func:`call`, :func:`result` and :func:`error` write frames as compact
JSON text.

Payload models validate the contract's types and ranges strictly (a JSON
``"5"`` or ``true`` is not an integer), ignore unknown extra fields (forward
compatibility) and are immutable. Optional fields that are absent serialise
as absent, never as ``null``.

No I/O here, and nothing of the rest of the project is imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .wire import INT32_MAX, INT64_MAX, NotAFrame, StorableText, WireModel, field_path, is_storable_text, loads_frame
from .wire import TRY_AGAIN_LATER as TRY_AGAIN_LATER  # a close code of this protocol too

# --------------------------------------------------------------------------
# Transport constants

SUBPROTOCOL: Final = "knot-station.v1"
WS_PATH: Final = "/api/stations/ws"
DEFAULT_PORT: Final = 8001
MAX_FRAME_BYTES: Final = 65536
MAX_ID_LENGTH: Final = 36
MIN_SECRET_LENGTH: Final = 16
#: Close code of an older connection when the same station connects again.
REPLACED: Final = 4001
#: Close code of a connection whose station secret was rotated (or whose station was removed).
SECRET_ROTATED: Final = 4003
#: Close code when the station's actor is unavailable (failing, or the service restarting): reconnect later.
#: Longest station id accepted in Basic auth: a bigint has at most 19 digits.
MAX_STATION_ID_DIGITS: Final = 19
#: Id used in an ERROR answering a frame whose id could not be read.
UNKNOWN_ID: Final = "-1"
DEFAULT_HEARTBEAT_INTERVAL: Final = 1800  # seconds, sent in the boot RESULT
DEFAULT_PING_INTERVAL: Final = 30.0  # seconds between WebSocket pings
MISSED_PONGS_LIMIT: Final = 2
DEFAULT_CALL_TIMEOUT: Final = 10.0  # seconds a backend CALL waits for its answer
ID_RETENTION_DAYS: Final = 7  # how long answered CALL ids are remembered

MAX_SPOTS: Final = 32


class MessageType(IntEnum):
    CALL = 2
    RESULT = 3
    ERROR = 4


class ErrorCode(StrEnum):
    """The error codes of an ERROR frame."""

    FORMAT_VIOLATION = "FormatViolation"  # not a valid frame or payload
    PROTOCOL_ERROR = "ProtocolError"  # not allowed now, e.g. before boot
    NOT_IMPLEMENTED = "NotImplemented"  # unknown action
    SECURITY_ERROR = "SecurityError"
    INTERNAL_ERROR = "InternalError"
    GENERIC_ERROR = "GenericError"


class Action(StrEnum):
    # station -> backend
    BOOT = "boot"
    STATE = "state"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    UNEXPECTED_UNLOCK = "unexpected-unlock"
    BADGE_RFID = "badge-rfid"
    ALERT = "alert"
    FAULT = "fault"
    CONFIGURED = "configured"
    CONFIG_FAILED = "config-failed"
    # backend -> station
    PING = "ping"
    REBOOT = "reboot"
    UNLOCK = "unlock"
    REFRESH = "refresh"
    BADGE_FEEDBACK = "badge-feedback"
    CONFIG = "config"


# --------------------------------------------------------------------------
# Vocabulary


class Lock(IntEnum):
    OPEN = 0
    CLOSED = 1


class ConnectivityType(StrEnum):
    GSM = "GSM"
    CAT_M1 = "CAT-M1"
    CAT_NB1 = "CAT-NB1"


class LockAccepted(IntEnum):
    """The backend's answer to ``locked``."""

    ACCEPT = 0
    ACCEPT_CACHE = 1
    DENY = 2  # the station releases the vehicle


class _Labelled(IntEnum):
    """A code that travels with its name: ``alert_name`` beside ``alert``, ``fault_name`` beside ``fault``."""

    @property
    def label(self) -> str:
        """The contract's name, e.g. ``"power-cut"`` for ``Alert.POWER_CUT``."""
        return self.name.lower().replace("_", "-")


class Alert(_Labelled):
    SHAKE = 0
    POWER_CUT = 1
    HIGH_TEMP = 2
    INCORRECT_LOCK = 3
    LOCKER_STUCK = 4


class AlertStatus(StrEnum):
    APPEARING = "appearing"
    DISAPPEARED = "disappeared"


class Fault(_Labelled):
    COMMUNICATION_FAULT = 0
    CHARGE_FAULT = 1
    ABNORMAL_LOW_VOLTAGE = 2
    ABNORMAL_HIGH_VOLTAGE = 3


class ConfigType(StrEnum):
    VOLUME = "volume"
    ALARM_THRESHOLD = "alarm-threshold"


class BadgeFeedbackStatus(IntEnum):
    LINK_STARTED = 0
    LINKED = 1
    FAILURE = 2


class BootStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # disabled station: the backend closes the socket


class UnlockStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


# --------------------------------------------------------------------------
# Field types

E = TypeVar("E", bound=Enum)


def _wire_enum(enum: type[E]) -> Callable[[Any], Any]:
    """Turn a JSON value into a member of ``enum``, strictly.

    Pydantic's strict mode wants enum instances from Python input; this takes
    the JSON value (an ``int`` for an IntEnum, never a bool, float or string)
    and leaves everything else to fail with a readable message.
    """
    value_type = int if issubclass(enum, int) else str
    allowed = ", ".join(repr(member.value) for member in enum)

    def convert(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        if type(value) is value_type:
            try:
                return enum(value)
            except ValueError:
                pass
        raise PydanticCustomError("enum", "Input should be one of {allowed}", {"allowed": allowed})

    return convert


def _enum(enum: type[E]) -> Any:
    return BeforeValidator(_wire_enum(enum))


_BADGE_ID = re.compile(r"(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{14}|[0-9A-Fa-f]{20})")


def _badge_id(value: str) -> str:
    if not _BADGE_ID.fullmatch(value):
        raise PydanticCustomError("badge_id", "Input should be an ISO 14443A UID in hex: 8, 14 or 20 hex digits")
    return value.upper()


# Every integer is bounded by the column it may be stored in (``knot_rt/migrations``): vehicle
# ids and times are bigint, voltages integer (``vehicles.voltage``); values kept only in jsonb
# (radio levels, energy counters) get the same bounds, so no value is beyond what a reader expects.
SpotNumber = Annotated[int, Field(ge=1, le=MAX_SPOTS)]
VehicleId = Annotated[int, Field(ge=0, le=INT64_MAX)]  # 0: the id could not be read
EpochMs = Annotated[int, Field(ge=0, le=INT64_MAX)]
Millivolts = Annotated[int, Field(ge=0, le=INT32_MAX)]
Percent = Annotated[int, Field(ge=0, le=100)]
RadioLevel = Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]  # dBm
Celsius = Annotated[float, Field(ge=-273.15, le=1000.0, allow_inf_nan=False)]
#: Free text of a station (firmware versions, alert and fault names): storable, bounded.
Name = StorableText
#: An ISO 14443A UID in hex, normalised to upper case.
BadgeId = Annotated[str, AfterValidator(_badge_id)]


# --------------------------------------------------------------------------
# Payload models


class Payload(WireModel):
    """Base of every payload: strict, immutable, extra fields ignored."""


class _Empty(Payload):
    pass


# station -> backend ------------------------------------------------------


class BoardInfo(Payload):
    firmware_version: Name
    board_revision: Name


class BootPayload(Payload):
    mainboard: BoardInfo
    spots: list[BoardInfo] = Field(min_length=1, max_length=MAX_SPOTS)  # in spot order


class MainboardState(Payload):
    v5: Millivolts
    v48: Millivolts
    temp: Celsius


class SpotState(Payload):
    spot: SpotNumber
    vehicle: VehicleId | None  # None: the spot is empty
    lock: Annotated[Lock, _enum(Lock)]


class VehicleState(Payload):
    vehicle: VehicleId
    voltage: Millivolts
    battery: Percent | None  # None: unknown


class Connectivity(Payload):
    type: Annotated[ConnectivityType, _enum(ConnectivityType)]
    rssi: RadioLevel
    rsrp: RadioLevel


class Energy(Payload):
    total_active_energy: Annotated[int, Field(ge=0, le=INT64_MAX)]
    total_apparent_energy: Annotated[int, Field(ge=0, le=INT64_MAX)]


class StatePayload(Payload):
    mainboard: MainboardState
    spots: list[SpotState] = Field(max_length=MAX_SPOTS)
    vehicles: list[VehicleState] = Field(max_length=MAX_SPOTS)
    connectivity: Connectivity
    energy: Energy | None = None

    @field_validator("spots")
    @classmethod
    def _distinct_spots(cls, spots: list[SpotState]) -> list[SpotState]:
        seen: set[int] = set()
        for entry in spots:
            if entry.spot in seen:
                raise PydanticCustomError("duplicate_spot", "Spot {spot} appears twice", {"spot": entry.spot})
            seen.add(entry.spot)
        return spots


class LockedPayload(Payload):
    spot: SpotNumber
    vehicle: VehicleId  # 0 when the id could not be read
    time: EpochMs
    cache_accepted: bool  # the station already accepted on its own


class UnlockedPayload(Payload):
    spot: SpotNumber
    unlock: Annotated[int, Field(ge=0, le=INT64_MAX)]  # the unlock command's id, 0 if none
    vehicle: VehicleId | None  # None when the spot was empty


class UnexpectedUnlockPayload(Payload):
    spot: SpotNumber


class BadgeRfidPayload(Payload):
    badge_id: BadgeId
    spot: SpotNumber | None = None  # stations with one reader per spot


class AlertPayload(Payload):
    alert: Annotated[Alert, _enum(Alert)]
    alert_name: Name
    alert_status: Annotated[AlertStatus, _enum(AlertStatus)]
    spot: SpotNumber | None = None  # absent: the whole station


class FaultPayload(Payload):
    fault: Annotated[Fault, _enum(Fault)]
    fault_name: Name
    fault_status: Name  # the contract does not enumerate its values
    spot: SpotNumber


class _ConfigOutcome(Payload):
    type: Annotated[ConfigType, _enum(ConfigType)]
    value: Percent


class ConfiguredPayload(_ConfigOutcome):
    pass


class ConfigFailedPayload(_ConfigOutcome):
    pass


# backend -> station ------------------------------------------------------


class PingPayload(_Empty):
    pass


class RebootPayload(_Empty):
    pass


class UnlockPayload(Payload):
    spot: SpotNumber
    unlock: Annotated[int, Field(ge=1, le=INT64_MAX)]  # echoed in the `unlocked` event


class RefreshPayload(Payload):
    spot: SpotNumber | None = None  # absent: every occupied spot


class BadgeFeedbackPayload(Payload):
    status: Annotated[BadgeFeedbackStatus, _enum(BadgeFeedbackStatus)]
    spot: SpotNumber | None = None


class ConfigPayload(Payload):
    config: Annotated[ConfigType, _enum(ConfigType)]
    value: Percent


# RESULT payloads ---------------------------------------------------------


class EmptyResult(_Empty):
    pass


class BootResult(Payload):
    status: Annotated[BootStatus, _enum(BootStatus)]
    heartbeat_interval: Annotated[int, Field(ge=1)]  # seconds
    server_time: EpochMs


class LockedResult(Payload):
    accepted: Annotated[LockAccepted, _enum(LockAccepted)]


class UnlockResult(Payload):
    status: Annotated[UnlockStatus, _enum(UnlockStatus)]


#: CALLs a station sends (what the backend accepts): action -> payload model.
STATION_ACTIONS: Final[Mapping[str, type[Payload]]] = {
    Action.BOOT: BootPayload,
    Action.STATE: StatePayload,
    Action.LOCKED: LockedPayload,
    Action.UNLOCKED: UnlockedPayload,
    Action.UNEXPECTED_UNLOCK: UnexpectedUnlockPayload,
    Action.BADGE_RFID: BadgeRfidPayload,
    Action.ALERT: AlertPayload,
    Action.FAULT: FaultPayload,
    Action.CONFIGURED: ConfiguredPayload,
    Action.CONFIG_FAILED: ConfigFailedPayload,
}

#: CALLs the backend sends (what a station accepts): action -> payload model.
BACKEND_ACTIONS: Final[Mapping[str, type[Payload]]] = {
    Action.PING: PingPayload,
    Action.REBOOT: RebootPayload,
    Action.UNLOCK: UnlockPayload,
    Action.REFRESH: RefreshPayload,
    Action.BADGE_FEEDBACK: BadgeFeedbackPayload,
    Action.CONFIG: ConfigPayload,
}

#: Every action, both directions.
ACTIONS: Final[Mapping[str, type[Payload]]] = {**STATION_ACTIONS, **BACKEND_ACTIONS}

#: The RESULT payload model of each action.
RESULTS: Final[Mapping[str, type[Payload]]] = {
    **{action: EmptyResult for action in Action},
    Action.BOOT: BootResult,
    Action.LOCKED: LockedResult,
    Action.UNLOCK: UnlockResult,
}


# --------------------------------------------------------------------------
# Frames

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True, slots=True)
class Call:
    """A CALL; ``action`` is a member of its protocol's action enum (``Action`` here, or the vehicle
    protocol's, which shares this framing)."""

    id: str
    action: StrEnum
    payload: Payload


@dataclass(frozen=True, slots=True)
class Result:
    """A RESULT; its payload is only typed once matched with its CALL."""

    id: str
    payload: dict[str, Any]

    def decode(self, model: type[P]) -> P:
        """The payload as ``model`` (e.g. ``RESULTS[action]``); raises :class:`FrameError`."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise _payload_error(self.id, "RESULT", exc, MessageType.RESULT) from None


@dataclass(frozen=True, slots=True)
class Error:
    id: str
    code: ErrorCode
    description: str
    details: dict[str, Any] = field(default_factory=dict)


Frame = Call | Result | Error


class FrameError(Exception):
    """A frame that could not be parsed; :attr:`frame` is the ERROR to answer.

    ``message_type`` is the type the frame claimed when it could be read (so a
    gateway can tell a broken answer to one of its own CALLs from a broken
    CALL), else None.
    """

    def __init__(
        self,
        id: str,
        code: ErrorCode,
        description: str,
        details: Mapping[str, Any] | None = None,
        *,
        message_type: MessageType | None = None,
    ) -> None:
        super().__init__(f"{code}: {description}")
        self.error = Error(id, code, description, dict(details or {}))
        self.message_type = message_type

    @property
    def id(self) -> str:
        return self.error.id

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def description(self) -> str:
        return self.error.description

    @property
    def frame(self) -> str:
        """The ERROR frame answering the bad frame, as JSON text."""
        return error(self.error.id, self.error.code, self.error.description, self.error.details)


_MAX_REPORTED_ERRORS: Final = 10
_MESSAGE_TYPES: Final = frozenset(int(member) for member in MessageType)


def _payload_error(id: str, what: str, exc: ValidationError, message_type: MessageType) -> FrameError:
    errors = [
        {"field": field_path(tuple(err["loc"]), "payload"), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0]
    return FrameError(
        id,
        ErrorCode.FORMAT_VIOLATION,
        f"invalid {what} payload: {first['field']}: {first['message']}",
        {"errors": errors[:_MAX_REPORTED_ERRORS]},
        message_type=message_type,
    )


def _readable_id(value: Any) -> str | None:
    """A message id we can store and echo: 1..36 characters, no NUL, no lone surrogate."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and is_storable_text(value):
        return value
    return None


def _utf8_size(text: str, limit: int) -> int:
    if len(text) * 4 <= limit:  # no str this short can be too large
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def parse_frame(
    text: str | bytes, *, actions: Mapping[str, type[Payload]] = STATION_ACTIONS,
    action_type: type[StrEnum] = Action, max_bytes: int = MAX_FRAME_BYTES,
) -> Frame:
    """Parse one frame; raise :class:`FrameError` with the ERROR to answer.

    ``actions`` are the CALL actions this side accepts: :data:`STATION_ACTIONS`
    (the default, the backend's view) or :data:`BACKEND_ACTIONS` (a station's
    or the simulator's view). Any other action answers ``NotImplemented``.
    ``action_type`` and ``max_bytes`` let another protocol with this framing
    (``protocols.vehicle``) parse its own frames.
    """

    def violation(id: str | None, description: str, message_type: MessageType | None = None) -> FrameError:
        return FrameError(id or UNKNOWN_ID, ErrorCode.FORMAT_VIOLATION, description, message_type=message_type)

    size = len(text) if isinstance(text, bytes) else _utf8_size(text, max_bytes)
    if size > max_bytes:
        raise violation(None, f"frame of {size} bytes exceeds the limit of {max_bytes} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise violation(None, "frame is not UTF-8 text") from None
    try:
        data = loads_frame(text, list)
    except NotAFrame as exc:
        raise violation(None, str(exc)) from None

    id = _readable_id(data[1]) if len(data) > 1 else None
    kind = data[0] if data else None
    if type(kind) is not int or kind not in _MESSAGE_TYPES:
        raise violation(id, "frame type must be 2 (CALL), 3 (RESULT) or 4 (ERROR)")
    message_type = MessageType(kind)
    if id is None:
        raise violation(
            None, f"message id must be a string of 1 to {MAX_ID_LENGTH} characters, without NUL or lone surrogates",
            message_type,
        )

    if message_type is MessageType.CALL:
        if len(data) != 4 or not isinstance(data[2], str) or not isinstance(data[3], dict):
            raise violation(id, 'a CALL is [2, "<id>", "<action>", {payload}]', message_type)
        action, payload = data[2], data[3]
        model = actions.get(action)
        if model is None:
            raise FrameError(id, ErrorCode.NOT_IMPLEMENTED, f"unknown action {action!r}", message_type=message_type)
        try:
            return Call(id, action_type(action), model.model_validate(payload))
        except ValidationError as exc:
            raise _payload_error(id, repr(action), exc, message_type) from None

    if message_type is MessageType.RESULT:
        if len(data) != 3 or not isinstance(data[2], dict):
            raise violation(id, 'a RESULT is [3, "<id>", {payload}]', message_type)
        return Result(id, data[2])

    if len(data) != 5 or not isinstance(data[2], str) or not isinstance(data[3], str) or not isinstance(data[4], dict):
        raise violation(id, 'an ERROR is [4, "<id>", "<error_code>", "<description>", {details}]', message_type)
    try:
        code = ErrorCode(data[2])
    except ValueError:
        raise violation(id, f"unknown error code {data[2]!r}", message_type) from None
    return Error(id, code, data[3], data[4])


# --------------------------------------------------------------------------
# Serializers


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_id(id: str) -> None:
    if not isinstance(id, str) or not 0 < len(id) <= MAX_ID_LENGTH or not is_storable_text(id):
        raise ValueError(f"message id must be a string of 1 to {MAX_ID_LENGTH} characters, not {id!r}")


def call(id: str, action: str, payload: Payload, *, actions: Mapping[str, type[Payload]] = ACTIONS) -> str:
    """A CALL frame; ``payload`` must be the model of ``action`` (in ``actions``: this protocol's by default)."""
    _check_id(id)
    model = actions.get(action)
    if model is None:
        raise ValueError(f"unknown action {action!r}")
    if not isinstance(payload, model):
        raise TypeError(f"the payload of {action!r} is a {model.__name__}, not a {type(payload).__name__}")
    return _dumps([int(MessageType.CALL), id, str(action), payload.model_dump(mode="json")])


def result(id: str, payload: Payload | Mapping[str, Any] | None = None) -> str:
    """A RESULT frame; ``payload`` defaults to ``{}``."""
    _check_id(id)
    if isinstance(payload, Payload):
        body = payload.model_dump(mode="json")
    else:
        body = dict(payload or {})
    return _dumps([int(MessageType.RESULT), id, body])


def error(id: str, code: ErrorCode, description: str, details: Mapping[str, Any] | None = None) -> str:
    """An ERROR frame; ``id`` is ``"-1"`` when the failed frame's id was unreadable."""
    _check_id(id)
    return _dumps([int(MessageType.ERROR), id, str(ErrorCode(code)), description, dict(details or {})])
