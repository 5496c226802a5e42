"""The app feed frames and topics against feed-protocol.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from protocols import feed
from protocols.feed import (
    TOPIC_EVENTS,
    AuthFrame,
    EventFrame,
    EventName,
    FeedFrameError,
    PingFrame,
    PongFrame,
    ReadFrame,
    ReplyFrame,
    SubscribeFrame,
    Topic,
    TopicError,
    TopicKind,
    TypingFrame,
    UnsubscribeFrame,
    parse_client_frame,
    parse_server_frame,
    parse_topic,
)


def rejected(text: str | bytes) -> FeedFrameError:
    with pytest.raises(FeedFrameError) as info:
        parse_client_frame(text)
    return info.value


# --------------------------------------------------------------------------
# Topics


@pytest.mark.parametrize(
    ("text", "kind", "id"),
    [
        ("user", TopicKind.USER, None),
        ("support:4", TopicKind.SUPPORT, 4),
        ("maintenance:3", TopicKind.MAINTENANCE, 3),
        ("report:12", TopicKind.REPORT, 12),
        ("cluster:3", TopicKind.CLUSTER, 3),
        ("station:7001", TopicKind.STATION, 7001),
        ("station:9223372036854775807", TopicKind.STATION, 2**63 - 1),
    ],
)
def test_topics_parse(text: str, kind: TopicKind, id: int | None) -> None:
    topic = parse_topic(text)
    assert topic == Topic(kind, id)
    parsed_kind, parsed_id = topic
    assert (parsed_kind, parsed_id) == (kind, id)
    assert Topic.parse(text) == topic
    assert str(topic) == text


@pytest.mark.parametrize(
    "text",
    [
        "cluster:abc",
        "station:",
        "other",
        "",
        "user:1",
        "support",
        "support:0",
        "report",
        "report:0",
        "report:-1",
        "report:+1",
        "report:01",
        "report:1.5",
        "report: 1",
        "report:1 ",
        " user",
        "user\n",
        "User",
        "Report:1",
        "cluster:١٢",  # non-ASCII digits
        "cluster:9223372036854775808",
        "station:1:2",
    ],
)
def test_other_topics_are_rejected(text: str) -> None:
    with pytest.raises(TopicError, match="unknown topic"):
        parse_topic(text)


def test_non_string_topic_is_rejected() -> None:
    with pytest.raises(TopicError):
        parse_topic(12)  # type: ignore[arg-type]


def test_topic_events_follow_the_contract() -> None:
    assert set().union(*TOPIC_EVENTS.values()) == set(EventName) - {EventName.RESYNC}
    assert EventName.REPORT_UPDATED in TOPIC_EVENTS[TopicKind.USER] & TOPIC_EVENTS[TopicKind.SUPPORT]
    assert {str(name) for name in TOPIC_EVENTS[TopicKind.STATION]} == {
        "station.online",
        "station.offline",
        "station.state",
        "spot.locked",
        "spot.unlocked",
        "alert",
        "fault",
        "maintenance.opened",
        "maintenance.updated",
        "maintenance.resolved",
    }
    assert {str(name) for name in TOPIC_EVENTS[TopicKind.MAINTENANCE]} == {
        "maintenance.opened", "maintenance.updated", "maintenance.resolved",
    }
    assert {str(name) for name in TOPIC_EVENTS[TopicKind.USER]} == {
        "rent.started",
        "rent.paused",
        "rent.resumed",
        "rent.ended",
        "rent.too_long",  # not in feed-protocol.md's table: the warning issue 9 asks for (trip_too_long)
        "vehicle.unlocked",
        "vehicle.locked",
        "unlock.failed",
        "badge.linked",
        "badge.link_failed",
        "guarantee.updated",
        "report.updated",
    }
    assert {str(name) for name in TOPIC_EVENTS[TopicKind.REPORT]} == {
        "message.created", "message.read", "typing", "report.assigned", "report.resolved", "report.reopened",
    }
    assert {str(name) for name in TOPIC_EVENTS[TopicKind.SUPPORT]} == {"report.created", "report.updated"}
    assert TOPIC_EVENTS[TopicKind.CLUSTER] == {"cluster.updated"}
    assert feed.AUTH_FAILED == 4401
    assert feed.TOO_SLOW == 4408


# --------------------------------------------------------------------------
# Client frames


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "auth", "token": "eyJhbGciOi.x.y"}', AuthFrame(token="eyJhbGciOi.x.y")),
        ('{"type": "auth", "token": "t", "ref": "0"}', AuthFrame(token="t", ref="0")),
        (
            '{"type": "subscribe", "topic": "report:12", "since": 41, "ref": "3"}',
            SubscribeFrame(topic=Topic(TopicKind.REPORT, 12), since=41, ref="3"),
        ),
        (
            '{"type": "subscribe", "topic": "user", "ref": 1}',
            SubscribeFrame(topic=Topic(TopicKind.USER), ref=1),
        ),
        (
            '{"type": "subscribe", "topic": "cluster:3", "since": 0, "ref": "a"}',
            SubscribeFrame(topic=Topic(TopicKind.CLUSTER, 3), since=0, ref="a"),
        ),
        (
            '{"type": "unsubscribe", "topic": "station:7001", "ref": "4"}',
            UnsubscribeFrame(topic=Topic(TopicKind.STATION, 7001), ref="4"),
        ),
        ('{"type": "ping", "ref": "5"}', PingFrame(ref="5")),
        (
            '{"type": "typing", "topic": "report:12", "ref": "6"}',
            TypingFrame(topic=Topic(TopicKind.REPORT, 12), ref="6"),
        ),
        (
            '{"type": "read", "topic": "report:12", "message_id": 310, "ref": "7"}',
            ReadFrame(topic=Topic(TopicKind.REPORT, 12), message_id=310, ref="7"),
        ),
        ('{"type": "ping", "ref": "8", "sent_at": 1732450000}', PingFrame(ref="8")),  # extra fields ignored
    ],
)
def test_client_frames_parse(text: str, expected: Any) -> None:
    assert parse_client_frame(text) == expected
    assert parse_client_frame(text.encode()) == expected


def test_client_frames_serialise_back() -> None:
    frame = SubscribeFrame(topic=Topic(TopicKind.REPORT, 12), since=41, ref="3")
    text = feed.encode(frame)
    assert text == '{"type":"subscribe","topic":"report:12","since":41,"ref":"3"}'
    assert parse_client_frame(text) == frame
    assert feed.encode(PingFrame(ref=9)) == '{"type":"ping","ref":9}'


@pytest.mark.parametrize(
    ("text", "ref", "named"),
    [
        ("not json", None, "JSON"),
        ('{"type": "ping", "ref": NaN}', None, "JSON"),
        ('["ping", "1"]', None, "object"),
        ('"ping"', None, "object"),
        ('{"ref": "1"}', "1", "type"),
        ('{"type": 3, "ref": "1"}', "1", "type"),
        ('{"type": "join", "ref": "1"}', "1", "type"),
        ('{"type": "event", "ref": "1"}', "1", "type"),  # a server frame is not a client frame
        ('{"type": "subscribe", "topic": "cluster:abc", "ref": "2"}', "2", "topic"),
        ('{"type": "subscribe", "topic": "station:", "ref": "2"}', "2", "topic"),
        ('{"type": "subscribe", "topic": "other", "ref": "2"}', "2", "topic"),
        ('{"type": "subscribe", "topic": 12, "ref": "2"}', "2", "topic"),
        ('{"type": "subscribe", "ref": "2"}', "2", "topic"),
        ('{"type": "subscribe", "topic": "user", "since": -1, "ref": "2"}', "2", "since"),
        ('{"type": "subscribe", "topic": "user", "since": "4", "ref": "2"}', "2", "since"),
        ('{"type": "subscribe", "topic": "user", "since": 4.0, "ref": "2"}', "2", "since"),
        ('{"type": "subscribe", "topic": "user"}', None, "ref"),
        ('{"type": "subscribe", "topic": "user", "ref": true}', None, "ref"),
        ('{"type": "subscribe", "topic": "user", "ref": null}', None, "ref"),
        ('{"type": "subscribe", "topic": "user", "ref": 1.5}', None, "ref"),
        ('{"type": "subscribe", "topic": "user", "ref": "' + "r" * 129 + '"}', None, "ref"),
        ('{"type": "unsubscribe", "topic": "report:x", "ref": 3}', 3, "topic"),
        ('{"type": "typing", "topic": "cluster:3", "ref": "4"}', "4", "topic"),
        ('{"type": "typing", "topic": "user", "ref": "4"}', "4", "topic"),
        ('{"type": "read", "topic": "report:12", "ref": "5"}', "5", "message_id"),
        ('{"type": "read", "topic": "report:12", "message_id": 0, "ref": "5"}', "5", "message_id"),
        ('{"type": "read", "topic": "report:12", "message_id": "9", "ref": "5"}', "5", "message_id"),
        ('{"type": "read", "topic": "support:1", "message_id": 9, "ref": "5"}', "5", "topic"),
        ('{"type": "auth", "ref": "6"}', "6", "token"),
        ('{"type": "auth", "token": "", "ref": "6"}', "6", "token"),
        ('{"type": "auth", "token": 42, "ref": "6"}', "6", "token"),
        ('{"type": "ping"}', None, "ref"),
        ("[" * 50_000 + "]" * 50_000, None, "JSON"),
        (b'{"type": "ping", "ref": "\xff"}', None, "JSON"),
    ],
)
def test_bad_client_frames_are_rejected(text: str | bytes, ref: str | int | None, named: str) -> None:
    err = rejected(text)
    assert err.ref == ref
    assert named in err.message
    assert err.code == 2  # invalid input, from the shared error table
    answer = parse_server_frame(err.reply)
    assert answer == ReplyFrame(ref=ref, code=2, message=err.message)


def test_field_errors_name_the_field_first() -> None:
    err = rejected('{"type": "read", "topic": "report:12", "message_id": -3, "ref": "x"}')
    assert err.message.startswith("invalid 'read' frame: message_id: ")


# --------------------------------------------------------------------------
# Server frames


def test_reply_frames() -> None:
    assert feed.reply("3") == '{"type":"reply","ref":"3","code":0}'
    assert feed.reply(7, 13, "You may not see this station") == (
        '{"type":"reply","ref":7,"code":13,"message":"You may not see this station"}'
    )
    assert json.loads(feed.reply("3", 13)) == {"type": "reply", "ref": "3", "code": 13, "message": "Not allowed"}
    assert json.loads(feed.reply("3", 9999)) == {"type": "reply", "ref": "3", "code": 9999}
    assert parse_server_frame(feed.reply("3", 13)) == ReplyFrame(ref="3", code=13, message="Not allowed")
    assert parse_server_frame(feed.reply(None, 2, "bad")) == ReplyFrame(ref=None, code=2, message="bad")


def test_pong_frames() -> None:
    assert feed.pong("5") == '{"type":"pong","ref":"5"}'
    assert parse_server_frame(feed.pong(5)) == PongFrame(ref=5)


def test_event_frames() -> None:
    data = {"cluster_id": 3, "available_vehicles": 4, "free_spots": 2, "total_spots": 8, "cluster_is_down": False}
    text = feed.event("cluster:3", 42, EventName.CLUSTER_UPDATED, data)
    assert text == (
        '{"type":"event","topic":"cluster:3","seq":42,"event":"cluster.updated","data":'
        '{"cluster_id":3,"available_vehicles":4,"free_spots":2,"total_spots":8,"cluster_is_down":false}}'
    )
    assert parse_server_frame(text) == EventFrame(
        topic=Topic(TopicKind.CLUSTER, 3), seq=42, event="cluster.updated", data=data
    )
    assert json.loads(feed.event(Topic(TopicKind.USER), 1, "rent.started", {}))["topic"] == "user"


def test_event_data_may_hold_datetimes() -> None:
    at = datetime(2024, 11, 24, 12, 0, tzinfo=UTC)
    text = feed.event("report:12", 3, EventName.MESSAGE_CREATED, {"message_id": 310, "created_at": at})
    assert json.loads(text)["data"] == {"message_id": 310, "created_at": "2024-11-24T12:00:00Z"}


def test_resync_may_come_on_any_topic() -> None:
    for topic in ("user", "support:1", "report:1", "cluster:1", "station:1"):
        assert json.loads(feed.event(topic, 7, EventName.RESYNC, {}))["event"] == "resync"


@pytest.mark.parametrize(
    ("topic", "seq", "name"),
    [
        ("cluster:3", 1, "rent.started"),  # not an event of that topic
        ("user", 1, "station.state"),
        ("support:1", 1, "typing"),
        ("user", 1, "rent.exploded"),
        ("user", 0, "rent.started"),
        ("cluster:abc", 1, "cluster.updated"),
    ],
)
def test_event_serialiser_refuses_what_the_contract_does_not_allow(topic: str, seq: int, name: str) -> None:
    with pytest.raises(ValueError):
        feed.event(topic, seq, name, {})


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "event", "topic": "cluster:3", "seq": 0, "event": "cluster.updated", "data": {}}',
        '{"type": "event", "topic": "nowhere", "seq": 1, "event": "cluster.updated", "data": {}}',
        '{"type": "event", "topic": "user", "seq": 1, "event": "rent.started"}',
        '{"type": "reply", "code": 0}',
        '{"type": "ping", "ref": "1"}',
    ],
)
def test_bad_server_frames_are_rejected(text: str) -> None:
    with pytest.raises(FeedFrameError):
        parse_server_frame(text)
