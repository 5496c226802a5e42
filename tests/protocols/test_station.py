"""The station protocol frames against station-protocol.md."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from protocols import station
from protocols.station import (
    BACKEND_ACTIONS,
    MAX_FRAME_BYTES,
    RESULTS,
    STATION_ACTIONS,
    Action,
    Alert,
    AlertPayload,
    AlertStatus,
    BadgeFeedbackPayload,
    BadgeFeedbackStatus,
    BadgeRfidPayload,
    BootPayload,
    BootResult,
    BootStatus,
    Call,
    ConfigFailedPayload,
    ConfigPayload,
    ConfigType,
    ConfiguredPayload,
    ConnectivityType,
    EmptyResult,
    Error,
    ErrorCode,
    Fault,
    FaultPayload,
    FrameError,
    Lock,
    LockAccepted,
    LockedPayload,
    LockedResult,
    PingPayload,
    RebootPayload,
    RefreshPayload,
    Result,
    StatePayload,
    UnexpectedUnlockPayload,
    UnlockedPayload,
    UnlockPayload,
    UnlockResult,
    UnlockStatus,
    parse_frame,
)

T0 = 1_732_450_000_000  # an epoch in milliseconds

# Realistic payloads, one per action of the contract's tables.
STATION_PAYLOADS: dict[str, dict[str, Any]] = {
    "boot": {
        "mainboard": {"firmware_version": "3.2.0", "board_revision": "C"},
        "spots": [
            {"firmware_version": "1.8.4", "board_revision": "B"},
            {"firmware_version": "1.8.4", "board_revision": "B"},
            {"firmware_version": "1.9.0", "board_revision": "C"},
        ],
    },
    "state": {
        "mainboard": {"v5": 5020, "v48": 48310, "temp": 23.5},
        "spots": [
            {"spot": 1, "vehicle": 1042, "lock": 1},
            {"spot": 2, "vehicle": None, "lock": 0},
            {"spot": 3, "vehicle": 1077, "lock": 1},
        ],
        "vehicles": [
            {"vehicle": 1042, "voltage": 41800, "battery": 87},
            {"vehicle": 1077, "voltage": 36100, "battery": None},
        ],
        "connectivity": {"type": "CAT-M1", "rssi": -71, "rsrp": -98},
        "energy": {"total_active_energy": 125400, "total_apparent_energy": 131020},
    },
    "locked": {"spot": 3, "vehicle": 1077, "time": T0, "cache_accepted": False},
    "unlocked": {"spot": 3, "unlock": 5521, "vehicle": 1077},
    "unexpected-unlock": {"spot": 2},
    "badge-rfid": {"badge_id": "04a23bc2e15a80", "spot": 4},
    "alert": {"alert": 1, "alert_name": "power-cut", "alert_status": "appearing"},
    "fault": {"fault": 1, "fault_name": "charge-fault", "fault_status": "appearing", "spot": 5},
    "configured": {"type": "volume", "value": 60},
    "config-failed": {"type": "alarm-threshold", "value": 35},
}

BACKEND_PAYLOADS: dict[str, dict[str, Any]] = {
    "ping": {},
    "reboot": {},
    "unlock": {"spot": 3, "unlock": 5521},
    "refresh": {"spot": 3},
    "badge-feedback": {"status": 1, "spot": 4},
    "config": {"config": "alarm-threshold", "value": 35},
}

STATION_MODELS = {
    "boot": BootPayload,
    "state": StatePayload,
    "locked": LockedPayload,
    "unlocked": UnlockedPayload,
    "unexpected-unlock": UnexpectedUnlockPayload,
    "badge-rfid": BadgeRfidPayload,
    "alert": AlertPayload,
    "fault": FaultPayload,
    "configured": ConfiguredPayload,
    "config-failed": ConfigFailedPayload,
}

BACKEND_MODELS = {
    "ping": PingPayload,
    "reboot": RebootPayload,
    "unlock": UnlockPayload,
    "refresh": RefreshPayload,
    "badge-feedback": BadgeFeedbackPayload,
    "config": ConfigPayload,
}


def frame(*parts: Any) -> str:
    return json.dumps(list(parts))


def rejected(text: str | bytes, **kwargs: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse_frame(text, **kwargs)
    return info.value


# --------------------------------------------------------------------------
# Every action parses


def test_tables_cover_every_action() -> None:
    assert set(STATION_ACTIONS) == set(STATION_PAYLOADS) == set(STATION_MODELS)
    assert set(BACKEND_ACTIONS) == set(BACKEND_PAYLOADS) == set(BACKEND_MODELS)
    assert set(STATION_ACTIONS) | set(BACKEND_ACTIONS) == set(Action)
    assert set(RESULTS) == set(Action)


@pytest.mark.parametrize("action", list(STATION_PAYLOADS))
def test_station_action_parses(action: str) -> None:
    parsed = parse_frame(frame(2, "7-1031", action, STATION_PAYLOADS[action]))
    assert isinstance(parsed, Call)
    assert parsed.id == "7-1031"
    assert parsed.action == action
    assert type(parsed.payload) is STATION_MODELS[action]


@pytest.mark.parametrize("action", list(BACKEND_PAYLOADS))
def test_backend_action_parses_on_the_station_side(action: str) -> None:
    text = frame(2, "9b2f4c1e-7d0a-4e8b-a3c2-5f6e7d8c9b0a", action, BACKEND_PAYLOADS[action])
    parsed = parse_frame(text, actions=BACKEND_ACTIONS)
    assert isinstance(parsed, Call)
    assert parsed.action == action
    assert type(parsed.payload) is BACKEND_MODELS[action]


@pytest.mark.parametrize("action", list(BACKEND_PAYLOADS))
def test_backend_action_sent_by_a_station_is_not_implemented(action: str) -> None:
    err = rejected(frame(2, "1-1", action, BACKEND_PAYLOADS[action]))
    assert err.code is ErrorCode.NOT_IMPLEMENTED
    assert err.id == "1-1"


def test_state_fields() -> None:
    parsed = parse_frame(frame(2, "1-2", "state", STATION_PAYLOADS["state"]))
    assert isinstance(parsed, Call)
    state = parsed.payload
    assert isinstance(state, StatePayload)
    assert state.mainboard.v48 == 48310
    assert state.mainboard.temp == 23.5
    assert [spot.lock for spot in state.spots] == [Lock.CLOSED, Lock.OPEN, Lock.CLOSED]
    assert state.spots[1].vehicle is None
    assert state.vehicles[1].battery is None
    assert state.connectivity.type is ConnectivityType.CAT_M1
    assert state.energy is not None and state.energy.total_active_energy == 125400


def test_state_without_energy_and_with_integer_temperature() -> None:
    payload = {**STATION_PAYLOADS["state"], "mainboard": {"v5": 5000, "v48": 48000, "temp": 21}}
    del payload["energy"]
    parsed = parse_frame(frame(2, "1-2", "state", payload))
    assert isinstance(parsed, Call) and isinstance(parsed.payload, StatePayload)
    assert parsed.payload.energy is None
    assert parsed.payload.mainboard.temp == 21


def test_event_fields() -> None:
    locked = parse_frame(frame(2, "a", "locked", {"spot": 1, "vehicle": 0, "time": T0, "cache_accepted": True}))
    assert isinstance(locked, Call)
    assert locked.payload == LockedPayload(spot=1, vehicle=0, time=T0, cache_accepted=True)

    unlocked = parse_frame(frame(2, "b", "unlocked", {"spot": 32, "unlock": 0, "vehicle": None}))
    assert isinstance(unlocked, Call)
    assert unlocked.payload == UnlockedPayload(spot=32, unlock=0, vehicle=None)

    alert = parse_frame(frame(2, "c", "alert", STATION_PAYLOADS["alert"]))
    assert isinstance(alert, Call) and isinstance(alert.payload, AlertPayload)
    assert alert.payload.alert is Alert.POWER_CUT
    assert alert.payload.alert_status is AlertStatus.APPEARING
    assert alert.payload.spot is None  # the whole station

    fault = parse_frame(frame(2, "d", "fault", STATION_PAYLOADS["fault"]))
    assert isinstance(fault, Call) and isinstance(fault.payload, FaultPayload)
    assert fault.payload.fault is Fault.CHARGE_FAULT

    configured = parse_frame(frame(2, "e", "configured", STATION_PAYLOADS["configured"]))
    assert isinstance(configured, Call)
    assert configured.payload == ConfiguredPayload(type=ConfigType.VOLUME, value=60)


def test_backend_command_fields() -> None:
    feedback = parse_frame(frame(2, "x", "badge-feedback", {"status": 2}), actions=BACKEND_ACTIONS)
    assert isinstance(feedback, Call)
    assert feedback.payload == BadgeFeedbackPayload(status=BadgeFeedbackStatus.FAILURE)
    refresh = parse_frame(frame(2, "y", "refresh", {}), actions=BACKEND_ACTIONS)
    assert isinstance(refresh, Call)
    assert refresh.payload == RefreshPayload()


@pytest.mark.parametrize(
    ("badge_id", "normalised"),
    [("04a23bc2", "04A23BC2"), ("04a23bc2e15a80", "04A23BC2E15A80"), ("0123456789ABCDEFabcd", "0123456789ABCDEFABCD")],
)
def test_badge_ids_are_iso_14443a_uids_in_upper_case(badge_id: str, normalised: str) -> None:
    parsed = parse_frame(frame(2, "a", "badge-rfid", {"badge_id": badge_id}))
    assert isinstance(parsed, Call) and isinstance(parsed.payload, BadgeRfidPayload)
    assert parsed.payload.badge_id == normalised
    assert parsed.payload.spot is None


def test_unknown_fields_are_ignored_at_every_level() -> None:
    payload = json.loads(json.dumps(STATION_PAYLOADS["state"]))
    payload["firmware_flags"] = ["x"]
    payload["mainboard"]["v12"] = 12000
    payload["spots"][0]["charging"] = True
    parsed = parse_frame(frame(2, "a", "state", payload))
    assert isinstance(parsed, Call)
    assert parsed.payload == parse_frame(frame(2, "a", "state", STATION_PAYLOADS["state"])).payload  # type: ignore[union-attr]


def test_result_and_error_frames_parse() -> None:
    parsed = parse_frame(f'[3,"b-1",{{"status":"accepted","heartbeat_interval":1800,"server_time":{T0}}}]')
    assert parsed == Result("b-1", {"status": "accepted", "heartbeat_interval": 1800, "server_time": T0})
    assert isinstance(parsed, Result)
    assert parsed.decode(BootResult) == BootResult(status=BootStatus.ACCEPTED, heartbeat_interval=1800, server_time=T0)

    parsed = parse_frame('[4,"c-2","ProtocolError","boot first",{}]')
    assert parsed == Error("c-2", ErrorCode.PROTOCOL_ERROR, "boot first", {})


def test_result_payloads_decode_by_action() -> None:
    assert Result("a", {"accepted": 2}).decode(RESULTS["locked"]) == LockedResult(accepted=LockAccepted.DENY)
    assert Result("a", {"status": "rejected"}).decode(RESULTS["unlock"]) == UnlockResult(status=UnlockStatus.REJECTED)
    assert Result("a", {}).decode(RESULTS["state"]) == EmptyResult()


def test_bad_result_payload_raises_a_format_violation_naming_the_field() -> None:
    with pytest.raises(FrameError) as info:
        Result("u-9", {"status": "maybe"}).decode(UnlockResult)
    assert info.value.code is ErrorCode.FORMAT_VIOLATION
    assert info.value.id == "u-9"
    assert info.value.message_type is station.MessageType.RESULT
    assert "status" in info.value.description


# --------------------------------------------------------------------------
# Malformed frames


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '[2, "a", "boot", {}',
        '[2, "a", "state", {"temp": NaN}]',
        '{"id": "a"}',
        '"a"',
        "42",
        "null",
        "[]",
        "[2]",
        '[2, 17, "boot", {}]',
        '[2, null, "boot", {}]',
        '[2, "", "boot", {}]',
        '[5, ["a"], "boot", {}]',
        b'[2, "a", "boot", {"x": "\xff"}]',
        "[" * 40_000 + "]" * 40_000,
    ],
)
def test_unreadable_frames_answer_format_violation_with_id_minus_one(text: str | bytes) -> None:
    err = rejected(text)
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert err.id == "-1"
    assert json.loads(err.frame)[:3] == [4, "-1", "FormatViolation"]


@pytest.mark.parametrize(
    "text",
    [
        '[2, "abc"]',
        '[2, "abc", "boot"]',
        '[2, "abc", "boot", {}, {}]',
        '[2, "abc", 7, {}]',
        '[2, "abc", "boot", []]',
        '[2, "abc", "boot", null]',
        '[3, "abc"]',
        '[3, "abc", []]',
        '[3, "abc", {}, {}]',
        '[4, "abc", "GenericError", "oops"]',
        '[4, "abc", "GenericError", 5, {}]',
        '[4, "abc", "NoSuchCode", "oops", {}]',
        '[1, "abc", "boot", {}]',
        '[9, "abc"]',
        '["2", "abc", "boot", {}]',
        '[true, "abc", "boot", {}]',
        '[2.0, "abc", "boot", {}]',
    ],
)
def test_wrong_shape_with_readable_id_answers_with_that_id(text: str) -> None:
    err = rejected(text)
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert err.id == "abc"
    assert err.error == Error("abc", ErrorCode.FORMAT_VIOLATION, err.description, {})


def test_unknown_action_is_not_implemented() -> None:
    err = rejected('[2, "7-12", "self-destruct", {}]')
    assert err.code is ErrorCode.NOT_IMPLEMENTED
    assert err.id == "7-12"
    assert "self-destruct" in err.description
    assert err.message_type is station.MessageType.CALL


def test_id_of_36_characters_is_accepted_and_37_is_not() -> None:
    assert parse_frame(frame(3, "x" * 36, {})) == Result("x" * 36, {})
    err = rejected(frame(2, "x" * 37, "boot", STATION_PAYLOADS["boot"]))
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert err.id == "-1"
    assert "36" in err.description


def test_oversized_frames_are_rejected_before_parsing() -> None:
    text = frame(2, "a", "alert", {**STATION_PAYLOADS["alert"], "alert_name": "x" * MAX_FRAME_BYTES})
    for data in (text, text.encode()):
        err = rejected(data)
        assert err.code is ErrorCode.FORMAT_VIOLATION
        assert err.id == "-1"
        assert str(MAX_FRAME_BYTES) in err.description


def test_frame_of_exactly_the_limit_is_accepted_and_multibyte_text_is_measured_in_bytes() -> None:
    # The padding is an unknown field (ignored): text fields themselves are bounded to 256 characters.
    base = frame(2, "a", "alert", {**STATION_PAYLOADS["alert"], "padding": ""})
    exact = base.replace('"padding": ""', '"padding": "' + "x" * (MAX_FRAME_BYTES - len(base)) + '"')
    assert len(exact.encode()) == MAX_FRAME_BYTES
    assert isinstance(parse_frame(exact), Call)
    assert isinstance(parse_frame(exact.encode()), Call)

    wide = exact.replace("x" * 20_000, "é" * 15_000)  # fewer characters, more bytes
    assert len(wide) < MAX_FRAME_BYTES < len(wide.encode())
    assert rejected(wide).id == "-1"


def _with(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with ``path`` ("a.0.b") set, or deleted when value is ...."""
    copy = json.loads(json.dumps(payload))
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    target: Any = copy
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return copy


BAD_PAYLOADS = [
    # (action, path, bad value or ... to delete, field named in the description)
    ("locked", "spot", 0, "spot"),
    ("locked", "spot", 33, "spot"),
    ("locked", "spot", "3", "spot"),
    ("locked", "spot", 3.0, "spot"),
    ("locked", "vehicle", -1, "vehicle"),
    ("locked", "vehicle", True, "vehicle"),
    ("locked", "time", "2024-11-24T12:00:00Z", "time"),
    ("locked", "time", 1.7e12, "time"),
    ("locked", "time", ..., "time"),
    ("locked", "cache_accepted", 1, "cache_accepted"),
    ("locked", "cache_accepted", "false", "cache_accepted"),
    ("state", "spots.0.lock", 2, "spots[0].lock"),
    ("state", "spots.1.spot", 33, "spots[1].spot"),
    ("state", "spots.1.spot", 1, "spots"),  # the same spot twice
    ("state", "vehicles.0.battery", 101, "vehicles[0].battery"),
    ("state", "vehicles.0.battery", -1, "vehicles[0].battery"),
    ("state", "vehicles.0.voltage", 41.8, "vehicles[0].voltage"),
    ("state", "mainboard.v48", -5, "mainboard.v48"),
    ("state", "mainboard.temp", "hot", "mainboard.temp"),
    ("state", "connectivity.type", "LTE", "connectivity.type"),
    ("state", "connectivity.rsrp", ..., "connectivity.rsrp"),
    ("state", "vehicles", ..., "vehicles"),
    ("state", "energy.total_active_energy", -1, "energy.total_active_energy"),
    ("boot", "spots", [], "spots"),
    ("boot", "mainboard.firmware_version", 3, "mainboard.firmware_version"),
    ("unlocked", "unlock", -1, "unlock"),
    ("unlocked", "vehicle", ..., "vehicle"),
    ("unexpected-unlock", "spot", None, "spot"),
    ("badge-rfid", "badge_id", "04A23BC2E15A8Z", "badge_id"),
    ("badge-rfid", "badge_id", "04A23B", "badge_id"),
    ("badge-rfid", "badge_id", 4711, "badge_id"),
    ("badge-rfid", "spot", 0, "spot"),
    ("alert", "alert", 5, "alert"),
    ("alert", "alert", "shake", "alert"),
    ("alert", "alert_status", "gone", "alert_status"),
    ("alert", "alert_name", ..., "alert_name"),
    ("alert", "spot", 40, "spot"),
    ("fault", "fault", 4, "fault"),
    ("fault", "fault", -1, "fault"),
    ("fault", "spot", ..., "spot"),
    ("configured", "type", "brightness", "type"),
    ("configured", "value", 101, "value"),
    ("config-failed", "value", -1, "value"),
    # What PostgreSQL cannot store: NUL, lone surrogates, integers beyond their column, infinite floats.
    ("alert", "alert_name", "x\u0000y", "alert_name"),
    ("alert", "alert_name", "x\ud800y", "alert_name"),
    ("alert", "alert_name", "\udfff", "alert_name"),
    ("alert", "alert_name", "n" * 257, "alert_name"),
    ("fault", "fault_name", "\u0000", "fault_name"),
    ("fault", "fault_status", "a\udbffb", "fault_status"),
    ("boot", "mainboard.firmware_version", "1.0\u0000", "mainboard.firmware_version"),
    ("boot", "spots.0.board_revision", "\ud83d", "spots[0].board_revision"),
    ("locked", "vehicle", 2**63, "vehicle"),
    ("locked", "time", 2**63, "time"),
    ("unlocked", "unlock", 2**63, "unlock"),
    ("unlocked", "vehicle", 10**30, "vehicle"),
    ("state", "vehicles.0.voltage", 2**31, "vehicles[0].voltage"),
    ("state", "vehicles.0.vehicle", 2**63, "vehicles[0].vehicle"),
    ("state", "spots.0.vehicle", 2**64, "spots[0].vehicle"),
    ("state", "mainboard.v5", 2**31, "mainboard.v5"),
    ("state", "connectivity.rssi", -(2**31), "connectivity.rssi"),
    ("state", "connectivity.rsrp", 2**40, "connectivity.rsrp"),
    ("state", "energy.total_active_energy", 2**63, "energy.total_active_energy"),
    ("state", "mainboard.temp", -300.0, "mainboard.temp"),
]


@pytest.mark.parametrize(("action", "path", "value", "field"), BAD_PAYLOADS)
def test_bad_payload_is_a_format_violation_naming_the_field(action: str, path: str, value: Any, field: str) -> None:
    err = rejected(frame(2, "st-42", action, _with(STATION_PAYLOADS[action], path, value)))
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert err.id == "st-42"
    assert f": {field}: " in err.description
    assert err.error.details["errors"][0]["field"] == field


BAD_COMMANDS = [
    ("unlock", "unlock", 0, "unlock"),
    ("unlock", "spot", 33, "spot"),
    ("refresh", "spot", 0, "spot"),
    ("badge-feedback", "status", 3, "status"),
    ("config", "config", "brightness", "config"),
    ("config", "value", 100.5, "value"),
    ("config", "value", ..., "value"),
]


@pytest.mark.parametrize(("action", "path", "value", "field"), BAD_COMMANDS)
def test_bad_command_payload_is_a_format_violation_naming_the_field(
    action: str, path: str, value: Any, field: str
) -> None:
    err = rejected(frame(2, "cmd-1", action, _with(BACKEND_PAYLOADS[action], path, value)), actions=BACKEND_ACTIONS)
    assert err.code is ErrorCode.FORMAT_VIOLATION
    assert f": {field}: " in err.description


def test_storable_limits_are_accepted() -> None:
    """The largest values each column holds, and valid non-ASCII text (a surrogate pair is one character)."""
    state = _with(STATION_PAYLOADS["state"], "vehicles.0.voltage", 2**31 - 1)
    state = _with(state, "spots.0.vehicle", 2**63 - 1)
    assert isinstance(parse_frame(frame(2, "ok-1", "state", state)), Call)
    alert = _with(STATION_PAYLOADS["alert"], "alert_name", "coupure \U0001f50c " + "é" * 200)
    parsed = parse_frame(json.dumps([2, "ok-2", "alert", alert]))  # ASCII JSON: the emoji is a surrogate pair
    assert isinstance(parsed, Call) and isinstance(parsed.payload, AlertPayload)
    assert parsed.payload.alert_name.startswith("coupure \U0001f50c")


def test_a_number_beyond_float_range_is_not_a_temperature() -> None:
    """``1e400`` is valid JSON that Python reads as infinity (jsonb cannot hold it)."""
    text = frame(2, "t-1", "state", STATION_PAYLOADS["state"]).replace("23.5", "1e400")
    err = rejected(text)
    assert err.id == "t-1" and err.error.details["errors"][0]["field"] == "mainboard.temp"


@pytest.mark.parametrize("bad_id", ["a\u0000b", "\ud800", "ok\udc00", "\u0000"])
def test_ids_with_nul_or_lone_surrogates_are_unreadable(bad_id: str) -> None:
    """Such an id can be neither stored nor echoed as UTF-8: the ERROR uses id "-1"."""
    err = rejected(json.dumps([2, bad_id, "alert", STATION_PAYLOADS["alert"]]))
    assert err.code is ErrorCode.FORMAT_VIOLATION and err.id == "-1"
    assert "NUL" in err.description
    err.frame.encode("utf-8")  # the answer itself is valid UTF-8
    with pytest.raises(ValueError):
        station.result(bad_id)


def test_a_poisoned_frame_answer_is_always_valid_utf8() -> None:
    """Whatever the action or the values, the ERROR frame can be sent (no lone surrogate in it)."""
    for text in (
        json.dumps([2, "p-1", "\ud800", {}]),
        json.dumps([2, "p-2", "alert", {"alert": 0, "alert_name": "\ud800", "alert_status": "\u0000"}]),
        json.dumps([4, "p-3", "\ud800", "x", {}]),
    ):
        err = rejected(text)
        err.frame.encode("utf-8")


def test_every_error_is_reported_in_the_details() -> None:
    err = rejected(frame(2, "a", "locked", {"spot": 99, "vehicle": "x"}))
    fields = [entry["field"] for entry in err.error.details["errors"]]
    assert fields == ["spot", "vehicle", "time", "cache_accepted"]
    answer = parse_frame(err.frame)
    assert isinstance(answer, Error)
    assert answer == err.error


# --------------------------------------------------------------------------
# Serializers


def _models() -> list[tuple[str, station.Payload]]:
    models: list[tuple[str, station.Payload]] = []
    for action, payload in STATION_PAYLOADS.items():
        models.append((action, STATION_ACTIONS[action].model_validate(payload)))
    for action, payload in BACKEND_PAYLOADS.items():
        models.append((action, BACKEND_ACTIONS[action].model_validate(payload)))
    return models


@pytest.mark.parametrize(("action", "payload"), _models())
def test_call_round_trips(action: str, payload: station.Payload) -> None:
    actions = STATION_ACTIONS if action in STATION_ACTIONS else BACKEND_ACTIONS
    text = station.call("5-77", action, payload)
    assert parse_frame(text, actions=actions) == Call("5-77", Action(action), payload)
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def test_call_writes_the_contract_values() -> None:
    payload = StatePayload.model_validate(STATION_PAYLOADS["state"])
    assert json.loads(station.call("1-1", "state", payload)) == [2, "1-1", "state", STATION_PAYLOADS["state"]]
    text = station.call(
        "1-2", "alert", AlertPayload(alert=Alert.SHAKE, alert_name="shake", alert_status=AlertStatus.DISAPPEARED)
    )
    assert text == '[2,"1-2","alert",{"alert":0,"alert_name":"shake","alert_status":"disappeared"}]'
    # absent optional fields stay absent; required nullable ones are written as null
    text = station.call("1-3", "unlocked", UnlockedPayload(spot=2, unlock=0, vehicle=None))
    assert text == '[2,"1-3","unlocked",{"spot":2,"unlock":0,"vehicle":null}]'
    assert station.call("1-4", Action.PING, PingPayload()) == '[2,"1-4","ping",{}]'


def test_call_refuses_mismatches() -> None:
    with pytest.raises(TypeError):
        station.call("a", "locked", UnexpectedUnlockPayload(spot=1))
    with pytest.raises(ValueError):
        station.call("a", "self-destruct", PingPayload())
    with pytest.raises(ValueError):
        station.call("x" * 37, "ping", PingPayload())
    with pytest.raises(ValueError):
        station.call("", "ping", PingPayload())


def test_result_round_trips() -> None:
    boot = BootResult(status=BootStatus.ACCEPTED, heartbeat_interval=1800, server_time=T0)
    text = station.result("b-1", boot)
    assert text == f'[3,"b-1",{{"status":"accepted","heartbeat_interval":1800,"server_time":{T0}}}]'
    parsed = parse_frame(text)
    assert isinstance(parsed, Result)
    assert parsed.decode(BootResult) == boot
    assert station.result("l-1", LockedResult(accepted=LockAccepted.ACCEPT_CACHE)) == '[3,"l-1",{"accepted":1}]'
    assert station.result("s-1") == '[3,"s-1",{}]'
    assert station.result("s-2", {}) == '[3,"s-2",{}]'


def test_error_round_trips() -> None:
    text = station.error("-1", ErrorCode.FORMAT_VIOLATION, "frame is not valid JSON")
    assert text == '[4,"-1","FormatViolation","frame is not valid JSON",{}]'
    text = station.error("a-1", ErrorCode.INTERNAL_ERROR, "database unavailable", {"retry": True})
    assert parse_frame(text) == Error("a-1", ErrorCode.INTERNAL_ERROR, "database unavailable", {"retry": True})


def test_contract_names_and_constants() -> None:
    assert station.SUBPROTOCOL == "knot-station.v1"
    assert station.MAX_FRAME_BYTES == 65536
    assert station.MAX_ID_LENGTH == 36
    assert station.REPLACED == 4001
    assert [code.value for code in ErrorCode] == [
        "FormatViolation",
        "ProtocolError",
        "NotImplemented",
        "SecurityError",
        "InternalError",
        "GenericError",
    ]
    assert [alert.label for alert in Alert] == ["shake", "power-cut", "high-temp", "incorrect-lock", "locker-stuck"]
    assert [fault.label for fault in Fault] == [
        "communication-fault",
        "charge-fault",
        "abnormal-low-voltage",
        "abnormal-high-voltage",
    ]
    assert [int(x) for x in LockAccepted] == [0, 1, 2]
    assert [x.name for x in BadgeFeedbackStatus] == ["LINK_STARTED", "LINKED", "FAILURE"]


# --------------------------------------------------------------------------
# Robustness: whatever arrives, the answer is a frame or a FrameError


def _mutate(value: Any, rng: random.Random) -> Any:
    weird: list[Any] = [None, True, False, 0, -1, 33, 2**70, 1.5, "", "x" * 40, [], {}, [1, [2]], {"a": None}]
    if rng.random() < 0.15:
        return rng.choice(weird)
    if isinstance(value, dict):
        out = {key: _mutate(item, rng) for key, item in value.items() if rng.random() > 0.05}
        if rng.random() < 0.1:
            out[rng.choice(["extra", "spot", "id"])] = rng.choice(weird)
        return out
    if isinstance(value, list):
        items = [_mutate(item, rng) for item in value if rng.random() > 0.05]
        if rng.random() < 0.1:
            items.append(rng.choice(weird))
        return items
    return value


def test_mutated_frames_never_raise_anything_but_frame_error() -> None:
    rng = random.Random(20241124)
    seeds = [[2, "7-1", action, payload] for action, payload in STATION_PAYLOADS.items()]
    seeds += [[3, "7-2", {"accepted": 0}], [4, "7-3", "GenericError", "x", {}]]
    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(3000):
        text = json.dumps(_mutate(rng.choice(seeds), rng))
        if rng.random() < 0.05:
            cut = rng.randrange(len(text))
            text = text[:cut] + text[cut + 1 :]
        try:
            parsed = parse_frame(text)
        except FrameError as err:
            outcomes["rejected"] += 1
            answer = parse_frame(err.frame)  # the answer is itself a valid frame
            assert isinstance(answer, Error)
        else:
            outcomes["parsed"] += 1
            assert isinstance(parsed, Call | Result | Error)
    assert outcomes["parsed"] > 100 and outcomes["rejected"] > 100
