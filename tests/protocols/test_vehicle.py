"""The vehicle protocol frames against vehicle-protocol.md: every action, and what a hostile module may send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocols import station, vehicle
from protocols.vehicle import (
    ACTIONS,
    BACKEND_ACTIONS,
    MAX_FRAME_BYTES,
    RESULTS,
    VEHICLE_ACTIONS,
    Action,
    AlertKind,
    AlertPayload,
    AlertStatus,
    BootPayload,
    BootResult,
    BootStatus,
    Call,
    CommandResult,
    CommandStatus,
    EmptyResult,
    Error,
    ErrorCode,
    FrameError,
    LocatePayload,
    LockedPayload,
    LockPayload,
    MessageType,
    Result,
    RingPayload,
    SpeedLimitPayload,
    StatusPayload,
    UnlockedPayload,
    UnlockPayload,
    parse_frame,
    valid_serial,
)

T0 = 1_767_225_600_000  # an epoch in milliseconds

VEHICLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "boot": {"firmware_version": "2.4.1", "model": "Max G30"},
    "status": {"lat": 48.5734, "lng": 7.7521, "battery": 64, "voltage": 38200, "speed": 12.5, "locked": False,
               "time": T0},
    "locked": {"lat": 48.5734, "lng": 7.7521, "time": T0, "lock": 17},
    "unlocked": {"unlock": 16, "time": T0},
    "alert": {"alert": "tow", "alert_status": "appearing", "lat": -33.86, "lng": 151.21, "time": T0},
}

BACKEND_PAYLOADS: dict[str, dict[str, Any]] = {
    "unlock": {"unlock": 16},
    "lock": {"lock": 17},
    "locate": {},
    "ring": {},
    "speed-limit": {"kmh": 20},
}


def frame(*parts: Any) -> str:
    return json.dumps(list(parts))


def rejected(text: str | bytes, **options: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse_frame(text, **options)
    answer = json.loads(info.value.frame)  # the ERROR to send back is itself a valid frame
    assert answer[0] == MessageType.ERROR and answer[1] == info.value.id
    return info.value


def _with(payload: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``payload`` with ``key`` set to ``value`` (``...``: removed)."""
    changed = dict(payload)
    if value is ...:
        del changed[key]
    else:
        changed[key] = value
    return changed


# --------------------------------------------------------------------------
# Every action


def test_tables_cover_every_action() -> None:
    assert set(VEHICLE_ACTIONS) == set(VEHICLE_PAYLOADS)
    assert set(BACKEND_ACTIONS) == set(BACKEND_PAYLOADS)
    assert set(ACTIONS) == set(RESULTS) == {str(action) for action in Action}


@pytest.mark.parametrize("action", list(VEHICLE_PAYLOADS))
def test_vehicle_action_parses(action: str) -> None:
    parsed = parse_frame(frame(2, "v-1", action, VEHICLE_PAYLOADS[action]))
    assert isinstance(parsed, Call)
    assert parsed.id == "v-1" and parsed.action == action and parsed.action is Action(action)
    assert isinstance(parsed.payload, VEHICLE_ACTIONS[action])


@pytest.mark.parametrize("action", list(BACKEND_PAYLOADS))
def test_backend_action_parses_on_the_vehicle_side(action: str) -> None:
    parsed = parse_frame(frame(2, "b1-1", action, BACKEND_PAYLOADS[action]), actions=BACKEND_ACTIONS)
    assert isinstance(parsed, Call) and isinstance(parsed.payload, BACKEND_ACTIONS[action])


@pytest.mark.parametrize("action", list(BACKEND_PAYLOADS))
def test_backend_action_sent_by_a_vehicle_is_not_implemented(action: str) -> None:
    err = rejected(frame(2, "v-2", action, BACKEND_PAYLOADS[action]))
    assert err.code is ErrorCode.NOT_IMPLEMENTED and err.id == "v-2"


def test_payload_fields() -> None:
    status = parse_frame(frame(2, "s", "status", VEHICLE_PAYLOADS["status"]))
    assert isinstance(status, Call)
    assert status.payload == StatusPayload(lat=48.5734, lng=7.7521, battery=64, voltage=38200, speed=12.5,
                                           locked=False, time=T0)
    alert = parse_frame(frame(2, "a", "alert", VEHICLE_PAYLOADS["alert"]))
    assert isinstance(alert, Call) and isinstance(alert.payload, AlertPayload)
    assert alert.payload.alert is AlertKind.TOW and alert.payload.alert_status is AlertStatus.APPEARING
    # An integer speed is a speed; a locked/unlocked without a command echoes 0.
    still = parse_frame(frame(2, "s2", "status", {**VEHICLE_PAYLOADS["status"], "speed": 0}))
    assert isinstance(still, Call) and isinstance(still.payload, StatusPayload) and still.payload.speed == 0.0
    assert parse_frame(frame(2, "l", "locked", {**VEHICLE_PAYLOADS["locked"], "lock": 0})) == Call(
        "l", Action.LOCKED, LockedPayload(lat=48.5734, lng=7.7521, time=T0, lock=0))


def test_unknown_fields_are_ignored() -> None:
    parsed = parse_frame(frame(2, "u", "unlocked", {**VEHICLE_PAYLOADS["unlocked"], "odometer": 1200}))
    assert parsed == Call("u", Action.UNLOCKED, UnlockedPayload(unlock=16, time=T0))


# --------------------------------------------------------------------------
# Hostile payloads

BAD_PAYLOADS: list[tuple[str, str, Any]] = [
    # strings for numbers, booleans for integers, numbers for booleans
    ("status", "lat", "48.5"),
    ("status", "battery", "80"),
    ("status", "battery", True),
    ("status", "voltage", False),
    ("status", "speed", "fast"),
    ("status", "locked", 1),
    ("status", "locked", "true"),
    ("status", "time", "1767225600000"),
    ("locked", "lock", True),
    ("unlocked", "unlock", "16"),
    ("unlocked", "unlock", 1.5),
    # out of range
    ("status", "lat", 90.0001),
    ("status", "lat", -91),
    ("status", "lng", 180.5),
    ("status", "lng", -181),
    ("alert", "lat", 1000),
    ("status", "battery", 101),
    ("status", "battery", -1),
    ("status", "voltage", -1),
    ("status", "voltage", 2**31),
    ("status", "speed", -0.5),
    ("status", "speed", 1e6),
    ("status", "time", -1),
    ("status", "time", 2**63),
    ("locked", "lock", -1),
    ("locked", "lock", 2**63),
    ("unlocked", "unlock", 10**30),
    # enums and missing fields
    ("alert", "alert", "theft"),
    ("alert", "alert", 1),
    ("alert", "alert_status", "gone"),
    ("status", "locked", ...),
    ("boot", "model", ...),
    ("boot", "firmware_version", 3),
    # text PostgreSQL cannot store: NUL and lone surrogates; text beyond its bound
    ("boot", "firmware_version", "1.0\u0000"),
    ("boot", "model", "\ud800"),
    ("boot", "model", "a\udfffb"),
    ("boot", "model", "m" * 257),
]


@pytest.mark.parametrize(("action", "key", "value"), BAD_PAYLOADS)
def test_a_bad_payload_is_a_format_violation_naming_the_field(action: str, key: str, value: Any) -> None:
    err = rejected(frame(2, "v-42", action, _with(VEHICLE_PAYLOADS[action], key, value)))
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert err.id == "v-42"
    assert err.message_type is MessageType.CALL
    assert err.error.details["errors"][0]["field"] == key


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_nan_and_infinity_are_no_position_nor_speed(number: str) -> None:
    for key in ("lat", "lng", "speed"):
        text = frame(2, "v-7", "status", {**VEHICLE_PAYLOADS["status"], key: 0.125}).replace("0.125", number)
        err = rejected(text)
        assert err.code is ErrorCode.FORMAT_VIOLATION


def test_an_integer_of_5000_digits_is_not_read() -> None:
    text = frame(2, "v-8", "unlocked", {"unlock": 1, "time": T0}).replace('"unlock": 1', '"unlock": ' + "9" * 5000)
    err = rejected(text)
    assert err.code is ErrorCode.FORMAT_VIOLATION


@pytest.mark.parametrize(
    "bad_backend",
    [("unlock", {"unlock": 0}), ("lock", {"lock": -3}), ("speed-limit", {"kmh": 256}), ("speed-limit", {"kmh": "20"}),
     ("unlock", {"unlock": True})],
)
def test_bad_commands_are_refused_on_the_vehicle_side(bad_backend: tuple[str, dict[str, Any]]) -> None:
    action, payload = bad_backend
    assert rejected(frame(2, "b1-2", action, payload), actions=BACKEND_ACTIONS).code is ErrorCode.FORMAT_VIOLATION


# --------------------------------------------------------------------------
# Frames


def test_frames_over_16_kib_are_rejected_and_16_kib_is_not() -> None:
    base = frame(2, "v-9", "boot", {**VEHICLE_PAYLOADS["boot"], "padding": ""})
    exact = base.replace('"padding": ""', '"padding": "' + "p" * (MAX_FRAME_BYTES - len(base.encode())) + '"')
    assert len(exact.encode()) == MAX_FRAME_BYTES
    assert isinstance(parse_frame(exact), Call)
    over = exact.replace('"padding": "', '"padding": "p')
    for data in (over, over.encode()):
        err = rejected(data)
        assert err.code is ErrorCode.FORMAT_VIOLATION and err.id == "-1"
        assert str(MAX_FRAME_BYTES) in err.description
    multibyte = base.replace('"padding": ""', '"padding": "' + "é" * (MAX_FRAME_BYTES // 2) + '"')
    assert len(multibyte) < MAX_FRAME_BYTES < len(multibyte.encode())
    assert rejected(multibyte).id == "-1"  # measured in bytes, not characters


def test_ids_of_36_characters_are_read_and_longer_ones_are_not() -> None:
    assert isinstance(parse_frame(frame(2, "x" * 36, "unlocked", VEHICLE_PAYLOADS["unlocked"])), Call)
    err = rejected(frame(2, "x" * 37, "unlocked", VEHICLE_PAYLOADS["unlocked"]))
    assert err.code is ErrorCode.FORMAT_VIOLATION and err.id == "-1"


@pytest.mark.parametrize("bad_id", ["a\u0000b", "\ud800", "ok\udc00", ""])
def test_ids_with_nul_or_lone_surrogates_are_unreadable(bad_id: str) -> None:
    assert rejected(frame(2, bad_id, "unlocked", VEHICLE_PAYLOADS["unlocked"])).id == "-1"


@pytest.mark.parametrize("text", ["", "not json", "[2,", "{}", "null", "[]", b"[2, \"a\", \"boot\", {\"x\": \"\xff\"}]",
                                  "[" * 40_000 + "]" * 40_000])
def test_unreadable_frames_are_answered_with_id_minus_one(text: str | bytes) -> None:
    err = rejected(text)
    assert err.code is ErrorCode.FORMAT_VIOLATION and err.id == "-1"


def test_unknown_action_is_not_implemented() -> None:
    err = rejected(frame(2, "v-3", "self-destruct", {}))
    assert err.code is ErrorCode.NOT_IMPLEMENTED and err.id == "v-3"
    assert err.message_type is MessageType.CALL
    assert "self-destruct" in err.description
    # a station action is not a vehicle's either
    assert rejected(frame(2, "v-4", "state", {})).code is ErrorCode.NOT_IMPLEMENTED


def test_result_and_error_shapes() -> None:
    boot = {"status": "accepted", "heartbeat_interval": 60, "server_time": T0}
    parsed = parse_frame(frame(3, "b1-1", boot))
    assert parsed == Result("b1-1", boot)
    assert isinstance(parsed, Result)
    assert parsed.decode(RESULTS["boot"]) == BootResult(status=BootStatus.ACCEPTED, heartbeat_interval=60,
                                                         server_time=T0)
    assert Result("x", {"status": "rejected"}).decode(RESULTS["unlock"]) == CommandResult(
        status=CommandStatus.REJECTED)
    assert Result("x", {}).decode(RESULTS["ring"]) == EmptyResult()
    assert parse_frame(frame(4, "b1-2", "GenericError", "jammed", {"why": 1})) == Error(
        "b1-2", ErrorCode.GENERIC_ERROR, "jammed", {"why": 1})
    for text in [frame(3, "b1-3"), frame(3, "b1-3", []), frame(4, "b1-3", "GenericError", "x"),
                 frame(4, "b1-3", "NoSuchCode", "x", {})]:
        err = rejected(text)
        assert err.id == "b1-3" and err.message_type in (MessageType.RESULT, MessageType.ERROR)
    with pytest.raises(FrameError) as info:
        Result("b1-4", {"status": "maybe"}).decode(RESULTS["lock"])
    assert info.value.message_type is MessageType.RESULT


# --------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize(
    ("action", "payload"),
    [("unlock", UnlockPayload(unlock=5)), ("lock", LockPayload(lock=6)), ("locate", LocatePayload()),
     ("ring", RingPayload()), ("speed-limit", SpeedLimitPayload(kmh=0)),
     ("boot", BootPayload(firmware_version="1", model="m")),
     ("alert", AlertPayload(alert=AlertKind.FALL, alert_status=AlertStatus.DISAPPEARED, lat=0, lng=0, time=T0))],
)
def test_call_round_trips(action: str, payload: station.Payload) -> None:
    text = vehicle.call("b1-9", action, payload)
    actions = BACKEND_ACTIONS if action in BACKEND_ACTIONS else VEHICLE_ACTIONS
    assert parse_frame(text, actions=actions) == Call("b1-9", Action(action), payload)


def test_call_refuses_a_wrong_payload() -> None:
    with pytest.raises(TypeError):
        vehicle.call("a", "unlock", LockPayload(lock=1))
    with pytest.raises(TypeError):
        vehicle.call("a", "locate", station.PingPayload())  # a station payload is not a vehicle's
    with pytest.raises(ValueError):
        vehicle.call("a", "ping", RingPayload())  # a station action
    with pytest.raises(ValueError):
        vehicle.call("x" * 37, "ring", RingPayload())


def test_contract_constants() -> None:
    assert vehicle.SUBPROTOCOL == "knot-vehicle.v1"
    assert vehicle.WS_PATH == "/api/vehicles/ws"
    assert MAX_FRAME_BYTES == 16 * 1024
    assert vehicle.MAX_ID_LENGTH == 36 and vehicle.MIN_SECRET_LENGTH == 16
    assert (vehicle.REPLACED, vehicle.SECRET_ROTATED, vehicle.TRY_AGAIN_LATER) == (4001, 4003, 1013)


@pytest.mark.parametrize(("serial", "valid"), [
    ("SN-0001", True), ("x" * 64, True), ("scooter 7", True), ("ÅB-12", True),
    ("", False), ("x" * 65, False), ("a:b", False), ("a\u0000b", False), ("a\nb", False), ("\u200b", False),
])
def test_valid_serial(serial: str, valid: bool) -> None:
    assert valid_serial(serial) is valid
