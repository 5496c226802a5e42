"""Contract names are spelled once, in ``protocols/``; the rest of the code uses the names.

The first test reads every module of ``knot_rt/`` and ``actors/`` (with ``ast``) and
fails on a string that retypes a contract name: a feed event name, a socket path,
or a topic built by hand (a string or f-string starting with ``station:``,
``cluster:``, ``user:``, ``report:`` or ``support:``). The other tests check the
names it asks for: the topic constructors, the resync frame and the one field-path
format.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from knot_rt.errors import ApiError
from knot_rt.web.errors import describe_validation_error
from knot_rt.web.inputs import check_json_value
from protocols import feed, station
from protocols.feed import EventFrame, EventName, Topic, TopicError, TopicKind, parse_server_frame
from protocols.wire import field_path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("knot_rt", "actors")

EVENT_NAMES = frozenset(name.value for name in EventName)
SOCKET_PATHS = (feed.WS_PATH, station.WS_PATH)


def _fields_and_docs(tree: ast.AST) -> set[int]:
    """Ids of the string constants that are no names: docstrings and bare strings, dict keys and
    subscripts (a payload field may share a word with a one-word event, e.g. ``"fault"``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))
        elif isinstance(node, ast.Dict):
            skipped.update(id(key) for key in node.keys if isinstance(key, ast.Constant))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            skipped.add(id(node.slice))
    return skipped


def contract_literals(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` retypes a contract name, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    skipped = _fields_and_docs(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # f"station:{id}": its first part is a topic prefix
            first = node.values[0] if node.values else None
            if isinstance(first, ast.Constant) and str(first.value).startswith(feed.TOPIC_PREFIXES):
                skipped.add(id(first))  # reported here, not once more as a string (ast.walk: parents first)
                found.append(f"{filename}:{node.lineno}: topic built by hand: f{ast.unparse(node)[1:]}")
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skipped:
            continue
        text = node.value
        if text in EVENT_NAMES:
            found.append(f"{filename}:{node.lineno}: event name {text!r}: use EventName")
        elif text.startswith(feed.TOPIC_PREFIXES):
            found.append(f"{filename}:{node.lineno}: topic built by hand: {text!r}: use Topic")
        elif any(path in text for path in SOCKET_PATHS):
            found.append(f"{filename}:{node.lineno}: socket path {text!r}: use WS_PATH")
    return found


def modules() -> list[Path]:
    return sorted(path for package in SCANNED for path in (ROOT / package).rglob("*.py"))


def test_no_contract_name_is_retyped_outside_protocols() -> None:
    assert len(modules()) > 50  # the walk found the tree
    found = [
        hit for path in modules() for hit in contract_literals(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("line", "what"),
    [  # lines of the tree before the names existed
        ('event = "station.online" if online else "station.offline"', "event name 'station.online'"),
        ('FEED = {Action.ALERT: "alert"}', "event name 'alert'"),
        ('await bus.publish(f"station:{view.station_id}", event, data)', "topic built by hand"),
        ('topic = f"cluster:{cluster_id}"', "topic built by hand"),
        ('name = "user:" + str(user_id)', "topic built by hand"),
        ('url = f"ws://{host}:{port}/api/stations/ws"', "socket path"),
        ('@bp.websocket("/api/application/ws")\ndef feed(): ...', "socket path"),
    ],
)
def test_the_scan_finds_retyped_names(line: str, what: str) -> None:
    hits = contract_literals(line)
    assert hits and all(what.split(" '")[0] in hit for hit in hits)
    assert any(what in hit for hit in hits)


@pytest.mark.parametrize(
    "line",
    [
        '"""Publishes spot.locked on station:<id>; the socket is /api/stations/ws."""',
        'kind = payload["fault"]',
        'data = {"alert": 2, "station_id": 7}',
        'log.info("station %s restarted", station_id)',
        "await bus.publish(Topic.station(7), EventName.SPOT_LOCKED, data)",
    ],
)
def test_the_scan_leaves_names_docs_and_fields_alone(line: str) -> None:
    assert contract_literals(line) == []


# --------------------------------------------------------------------------
# The names


def test_topic_constructors_write_the_contract_names() -> None:
    built = [Topic.station(7), Topic.cluster(3), Topic.report(12), Topic.user(), Topic.support(4)]
    assert [str(topic) for topic in built] == ["station:7", "cluster:3", "report:12", "user", "support:4"]
    assert [feed.parse_topic(str(topic)) for topic in built] == built
    assert Topic.station(2**63 - 1).id == 2**63 - 1


@pytest.mark.parametrize("bad", [0, -1, 2**63, True, "7", 7.0])
def test_topic_constructors_refuse_what_no_topic_holds(bad: object) -> None:
    with pytest.raises(ValueError):
        Topic.station(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Topic.user(bad)  # type: ignore[arg-type]


def test_a_users_own_topic_is_never_a_client_name() -> None:
    own = Topic.user(42)
    assert (str(own), own.public, str(own.public)) == ("user:42", Topic.user(), "user")
    assert Topic.user().for_user(42) == own
    assert Topic.cluster(3).for_user(42) == Topic.cluster(3)
    assert Topic.parse("user:42", per_user=True) == own
    assert Topic.parse("cluster:3", per_user=True) == Topic.cluster(3)
    for text in ("user:42", "user:0", "user:01"):
        with pytest.raises(TopicError):
            feed.parse_topic(text)  # a client may not name another user's topic, nor its own this way
    for text in ("user:0", "user:01", "user:9223372036854775808"):
        with pytest.raises(TopicError):
            Topic.parse(text, per_user=True)
    assert all(str(topic).startswith(feed.TOPIC_PREFIXES) for topic in (own, Topic.station(1), Topic.report(1)))


def test_resync_is_an_event_frame_even_before_the_first_event() -> None:
    for seq in (0, 3):
        frame = parse_server_frame(feed.resync("cluster:3", seq))
        assert frame == EventFrame(topic=Topic.cluster(3), seq=seq, event=EventName.RESYNC, data={})
    with pytest.raises(ValueError):
        feed.event(Topic.cluster(3), 0, EventName.CLUSTER_UPDATED, {})
    with pytest.raises(ValueError):
        feed.resync(Topic.cluster(3), -1)


# --------------------------------------------------------------------------
# One field-path format


class _Item(BaseModel):
    count: int


class _Order(BaseModel):
    items: list[_Item]


def test_http_validation_messages_write_paths_like_the_socket_protocols() -> None:
    with pytest.raises(ValidationError) as info:
        _Order.model_validate({"items": [{"count": 1}, {"count": "many"}]})
    assert describe_validation_error(info.value).startswith("invalid input: items[1].count: ")
    assert field_path(("items", 1, "count"), "frame") == "items[1].count"
    with pytest.raises(ApiError) as refused:
        check_json_value({"items": [{"count": 1}, {"note": "a\x00b"}]})
    assert refused.value.message.startswith("invalid input: items[1].note: ")


def test_topic_kinds_all_have_a_prefix() -> None:
    assert {prefix.rstrip(":") for prefix in feed.TOPIC_PREFIXES} == {kind.value for kind in TopicKind}
