"""The app feed protocol (``feed-protocol.md``) as pure data.

One WebSocket per app connection, JSON text frames. Clients send ``auth``,
``subscribe``, ``unsubscribe``, ``ping``, ``typing`` and ``read`` frames, each
with a client-chosen ``ref``; the server answers with ``reply`` or ``pong``
frames echoing it, and pushes ``event`` frames numbered per topic.

:func:`parse_client_frame` validates a client frame and raises
:class:`FeedFrameError` (with the ``reply`` to send) for a bad one;
:func:`reply`, :func:`pong` and :func:`event` write server frames as compact
JSON text. :func:`parse_topic` reads a topic name; :class:`Topic`'s constructors
(``Topic.station(7)``, ``Topic.user(user_id)``, ...) build one, so no topic name is
ever spelled by hand outside this module.

No I/O here, and nothing outside ``protocols`` is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, NamedTuple

import pydantic_core
from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ERRORS
from .errors import ErrorCode as ApiErrorCode
from .wire import INT64_MAX, NotAFrame, WireModel, field_path, loads_frame
from .wire import TRY_AGAIN_LATER as TRY_AGAIN_LATER  # a close code of this protocol too

# --------------------------------------------------------------------------
# Connection constants

WS_PATH: Final = "/api/application/ws"
#: Close code: bad or expired token at connect, bad ``auth`` frame, or logged-out session.
AUTH_FAILED: Final = 4401
#: Close code: the client read too slowly; it reconnects and resumes with ``since``.
TOO_SLOW: Final = 4408
AUTH_TIMEOUT: Final = 10.0  # seconds to send the first ``auth`` frame without a header
TYPING_TTL: Final = 5.0  # seconds a typing indicator lasts without another
MAX_REF_LENGTH: Final = 128


# --------------------------------------------------------------------------
# Topics


class TopicKind(StrEnum):
    USER = "user"
    REPORT = "report"
    CLUSTER = "cluster"
    STATION = "station"
    SUPPORT = "support"
    MAINTENANCE = "maintenance"


_WITH_ID: Final = frozenset(
    {TopicKind.REPORT, TopicKind.CLUSTER, TopicKind.STATION, TopicKind.SUPPORT, TopicKind.MAINTENANCE}
)
_TOPIC = re.compile(r"(user)|(report|cluster|station|support|maintenance):([1-9][0-9]{0,18})")
_USER_TOPIC = re.compile(r"user:([1-9][0-9]{0,18})")

#: How a topic name with an id begins: ``"station:"``, ``"cluster:"``, ``"report:"``, ``"user:"`` (a user's own
#: topic), and ``"support:"``; code outside ``protocols`` builds no string starting so (``tests/test_contract_names``).
TOPIC_PREFIXES: Final = tuple(f"{kind.value}:" for kind in TopicKind)


class TopicError(ValueError):
    """Not a topic of the feed contract."""


def _topic_id(kind: TopicKind, value: int) -> int:
    if type(value) is not int or not 0 < value <= INT64_MAX:
        raise ValueError(f"the id of a {kind.value!r} topic is an integer from 1 to {INT64_MAX}, not {value!r}")
    return value


class Topic(NamedTuple):
    """A parsed topic: ``(kind, id)``, ``id`` None for ``user``; ``support:<network_id>`` names a network.

    ``str(topic)`` is the canonical topic name, e.g. ``"report:12"``. Build one with
    the constructors (``Topic.station(7)``), read one with :meth:`parse`.

    The server keeps one ``user`` topic per user: ``Topic.user(42)`` is user 42's,
    named ``"user:42"`` on the bus and in ``feed_events``. A client never says that
    name (it subscribes to ``user``, which :meth:`for_user` turns into its own) and
    never sees it (:attr:`public` is ``user`` again).
    """

    kind: TopicKind
    id: int | None = None

    @classmethod
    def parse(cls, text: str, *, per_user: bool = False) -> Topic:
        return parse_topic(text, per_user=per_user)

    @classmethod
    def user(cls, user_id: int | None = None) -> Topic:
        """The ``user`` topic as a client names it; with ``user_id``, that user's own one."""
        return cls(TopicKind.USER, None if user_id is None else _topic_id(TopicKind.USER, user_id))

    @classmethod
    def report(cls, report_id: int) -> Topic:
        return cls(TopicKind.REPORT, _topic_id(TopicKind.REPORT, report_id))

    @classmethod
    def cluster(cls, cluster_id: int) -> Topic:
        return cls(TopicKind.CLUSTER, _topic_id(TopicKind.CLUSTER, cluster_id))

    @classmethod
    def station(cls, station_id: int) -> Topic:
        return cls(TopicKind.STATION, _topic_id(TopicKind.STATION, station_id))

    @classmethod
    def maintenance(cls, network_id: int) -> Topic:
        """The maintenance operators' topic of a network: every maintenance of its stations, spots, vehicles."""
        return cls(TopicKind.MAINTENANCE, _topic_id(TopicKind.MAINTENANCE, network_id))

    @classmethod
    def support(cls, network_id: int) -> Topic:
        """The support agents' topic of a network: its reports, new and changed."""
        return cls(TopicKind.SUPPORT, _topic_id(TopicKind.SUPPORT, network_id))

    def for_user(self, user_id: int) -> Topic:
        """The topic the server delivers when user ``user_id`` subscribes to this one."""
        return Topic.user(user_id) if self.kind is TopicKind.USER else self

    @property
    def public(self) -> Topic:
        """The topic as its client names it (a user's own ``user:<id>`` is ``user``)."""
        return Topic(TopicKind.USER) if self.kind is TopicKind.USER else self

    def __str__(self) -> str:
        return self.kind.value if self.id is None else f"{self.kind.value}:{self.id}"


def parse_topic(text: str, *, per_user: bool = False) -> Topic:
    """``"user"``, ``"support:<network_id>"``, ``"report:<id>"``, ``"cluster:<id>"``, ``"station:<id>"``.

    Ids are positive integers in canonical form (no sign, no leading zero).
    Raises :class:`TopicError` for anything else. ``per_user`` also accepts the
    server's ``"user:<id>"`` (see :class:`Topic`), which no client may send.
    """
    if per_user and isinstance(text, str) and (own := _USER_TOPIC.fullmatch(text)) is not None:
        number = int(own.group(1))
        if number <= INT64_MAX:
            return Topic(TopicKind.USER, number)
    match = _TOPIC.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TopicError(f"unknown topic {text!r}")
    bare, kind, digits = match.groups()
    if bare is not None:
        return Topic(TopicKind(bare))
    number = int(digits)
    if number > INT64_MAX:
        raise TopicError(f"unknown topic {text!r}")
    return Topic(TopicKind(kind), number)


def _topic_value(value: Any) -> Topic:
    if isinstance(value, Topic):
        return value
    try:
        return parse_topic(value)
    except TopicError as exc:
        raise PydanticCustomError("topic", str(exc)) from None


def _report_topic_value(value: Any) -> Topic:
    topic = _topic_value(value)
    if topic.kind is not TopicKind.REPORT:
        raise PydanticCustomError(
            "report_topic", "expected a 'report:<id>' topic, not '{topic}'", {"topic": str(topic)}
        )
    return topic


_TOPIC_SCHEMA: Final = WithJsonSchema({"type": "string", "examples": ["user", "report:12", "cluster:3"]})
TopicField = Annotated[Topic, PlainValidator(_topic_value), PlainSerializer(str, return_type=str), _TOPIC_SCHEMA]
ReportTopicField = Annotated[
    Topic, PlainValidator(_report_topic_value), PlainSerializer(str, return_type=str), _TOPIC_SCHEMA
]


# --------------------------------------------------------------------------
# Events


class EventName(StrEnum):
    # user
    RENT_STARTED = "rent.started"
    RENT_PAUSED = "rent.paused"
    RENT_RESUMED = "rent.resumed"
    RENT_ENDED = "rent.ended"
    RENT_TOO_LONG = "rent.too_long"
    VEHICLE_UNLOCKED = "vehicle.unlocked"
    VEHICLE_LOCKED = "vehicle.locked"
    UNLOCK_FAILED = "unlock.failed"
    BADGE_LINKED = "badge.linked"
    BADGE_LINK_FAILED = "badge.link_failed"
    GUARANTEE_UPDATED = "guarantee.updated"
    # report:<id> (MESSAGE_CREATED also on support)
    MESSAGE_CREATED = "message.created"
    MESSAGE_READ = "message.read"
    TYPING = "typing"
    REPORT_ASSIGNED = "report.assigned"
    REPORT_RESOLVED = "report.resolved"
    REPORT_REOPENED = "report.reopened"
    # cluster:<id>
    CLUSTER_UPDATED = "cluster.updated"
    # station:<id>
    STATION_ONLINE = "station.online"
    STATION_OFFLINE = "station.offline"
    STATION_STATE = "station.state"
    SPOT_LOCKED = "spot.locked"
    SPOT_UNLOCKED = "spot.unlocked"
    ALERT = "alert"
    FAULT = "fault"
    # station:<id> and maintenance:<network_id>
    MAINTENANCE_OPENED = "maintenance.opened"
    MAINTENANCE_UPDATED = "maintenance.updated"
    MAINTENANCE_RESOLVED = "maintenance.resolved"
    # support:<network_id> (and REPORT_UPDATED on user: a report of the user got an answer or changed)
    REPORT_CREATED = "report.created"
    REPORT_UPDATED = "report.updated"
    # any topic: the server no longer has the events after `since`; reload over HTTP
    RESYNC = "resync"


#: The events each kind of topic carries (``resync`` may come on any topic).
TOPIC_EVENTS: Final[Mapping[TopicKind, frozenset[EventName]]] = {
    TopicKind.USER: frozenset(
        {
            EventName.RENT_STARTED,
            EventName.RENT_PAUSED,
            EventName.RENT_RESUMED,
            EventName.RENT_ENDED,
            EventName.RENT_TOO_LONG,
            EventName.VEHICLE_UNLOCKED,
            EventName.VEHICLE_LOCKED,
            EventName.UNLOCK_FAILED,
            EventName.BADGE_LINKED,
            EventName.BADGE_LINK_FAILED,
            EventName.GUARANTEE_UPDATED,
            EventName.REPORT_UPDATED,
        }
    ),
    TopicKind.REPORT: frozenset(
        {
            EventName.MESSAGE_CREATED,
            EventName.MESSAGE_READ,
            EventName.TYPING,
            EventName.REPORT_ASSIGNED,
            EventName.REPORT_RESOLVED,
            EventName.REPORT_REOPENED,
        }
    ),
    TopicKind.CLUSTER: frozenset({EventName.CLUSTER_UPDATED}),
    TopicKind.STATION: frozenset(
        {
            EventName.STATION_ONLINE,
            EventName.STATION_OFFLINE,
            EventName.STATION_STATE,
            EventName.SPOT_LOCKED,
            EventName.SPOT_UNLOCKED,
            EventName.ALERT,
            EventName.FAULT,
            EventName.MAINTENANCE_OPENED,
            EventName.MAINTENANCE_UPDATED,
            EventName.MAINTENANCE_RESOLVED,
        }
    ),
    TopicKind.MAINTENANCE: frozenset(
        {EventName.MAINTENANCE_OPENED, EventName.MAINTENANCE_UPDATED, EventName.MAINTENANCE_RESOLVED}
    ),
    TopicKind.SUPPORT: frozenset({EventName.REPORT_CREATED, EventName.REPORT_UPDATED}),
}


def _first_seq(name: str) -> int:
    """The lowest ``seq`` of an event: 1, or 0 for a ``resync`` of a topic with no event yet."""
    return 0 if name == EventName.RESYNC else 1


# --------------------------------------------------------------------------
# Frames


def _is_ref(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= MAX_REF_LENGTH) or type(value) is int


def _ref_value(value: Any) -> str | int:
    if _is_ref(value):
        return value
    raise PydanticCustomError(
        "ref", "Input should be a string of at most {max} characters or an integer", {"max": MAX_REF_LENGTH}
    )


#: A client-chosen reference: a string (at most 128 characters) or an integer.
Ref = Annotated[
    str | int,
    PlainValidator(_ref_value),
    WithJsonSchema({"anyOf": [{"type": "string", "maxLength": MAX_REF_LENGTH}, {"type": "integer"}]}),
]


class _Frame(WireModel):
    """A feed frame."""


# client -> server --------------------------------------------------------


class AuthFrame(_Frame):
    type: Literal["auth"] = "auth"
    token: Annotated[str, Field(min_length=1)]
    ref: Ref | None = None


class SubscribeFrame(_Frame):
    type: Literal["subscribe"] = "subscribe"
    topic: TopicField
    since: Annotated[int, Field(ge=0)] | None = None  # replay the events after this seq
    ref: Ref


class UnsubscribeFrame(_Frame):
    type: Literal["unsubscribe"] = "unsubscribe"
    topic: TopicField
    ref: Ref


class PingFrame(_Frame):
    type: Literal["ping"] = "ping"
    ref: Ref


class TypingFrame(_Frame):
    type: Literal["typing"] = "typing"
    topic: ReportTopicField
    ref: Ref


class ReadFrame(_Frame):
    type: Literal["read"] = "read"
    topic: ReportTopicField
    message_id: Annotated[int, Field(ge=1, le=INT64_MAX)]  # messages up to this one are read
    ref: Ref


ClientFrame = Annotated[
    AuthFrame | SubscribeFrame | UnsubscribeFrame | PingFrame | TypingFrame | ReadFrame,
    Field(discriminator="type"),
]

CLIENT_FRAMES: Final[Mapping[str, type[_Frame]]] = {
    "auth": AuthFrame,
    "subscribe": SubscribeFrame,
    "unsubscribe": UnsubscribeFrame,
    "ping": PingFrame,
    "typing": TypingFrame,
    "read": ReadFrame,
}


# server -> client --------------------------------------------------------


class ReplyFrame(_Frame):
    type: Literal["reply"] = "reply"
    ref: Ref | None
    code: int = 0
    message: str | None = None


class PongFrame(_Frame):
    type: Literal["pong"] = "pong"
    ref: Ref | None


class EventFrame(_Frame):
    type: Literal["event"] = "event"
    topic: TopicField
    seq: Annotated[int, Field(ge=0)]  # from 1; 0 only in the `resync` of a topic that has no event yet
    event: str
    data: dict[str, Any]

    @model_validator(mode="after")
    def _sequenced(self) -> EventFrame:
        if self.seq < _first_seq(self.event):
            raise PydanticCustomError("seq", "seq should be at least 1 (0 only in a 'resync' event)")
        return self


ServerFrame = Annotated[ReplyFrame | PongFrame | EventFrame, Field(discriminator="type")]

SERVER_FRAMES: Final[Mapping[str, type[_Frame]]] = {
    "reply": ReplyFrame,
    "pong": PongFrame,
    "event": EventFrame,
}


class FeedFrameError(Exception):
    """A bad frame. ``ref`` is the frame's ref when readable, else None.

    :attr:`reply` is the reply frame to send: code 2 (invalid input) and the
    message, which names the offending field.
    """

    code: Final = ApiErrorCode.INVALID_INPUT

    def __init__(self, ref: str | int | None, message: str) -> None:
        super().__init__(message)
        self.ref = ref
        self.message = message

    @property
    def reply(self) -> str:
        return reply(self.ref, self.code, self.message)


# --------------------------------------------------------------------------
# Parsing


def _loads_object(text: str | bytes) -> dict[str, Any]:
    try:
        return loads_frame(text, dict)
    except NotAFrame as exc:
        raise FeedFrameError(None, str(exc)) from None


def _readable_ref(data: Mapping[str, Any]) -> str | int | None:
    ref = data.get("ref")
    return ref if _is_ref(ref) else None


def _validate(data: dict[str, Any], frames: Mapping[str, type[_Frame]]) -> Any:
    ref = _readable_ref(data)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FeedFrameError(ref, "type: missing or not a string")
    model = frames.get(kind)
    if model is None:
        raise FeedFrameError(ref, f"type: unknown frame type {kind!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise FeedFrameError(
            ref, f"invalid {kind!r} frame: {field_path(tuple(first['loc']), 'frame')}: {first['msg']}"
        ) from None


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse a client frame; raise :class:`FeedFrameError` for a bad one."""
    frame: ClientFrame = _validate(_loads_object(text), CLIENT_FRAMES)
    return frame


def parse_server_frame(text: str | bytes) -> ServerFrame:
    """Parse a server frame (for clients and tests); raise :class:`FeedFrameError`."""
    frame: ServerFrame = _validate(_loads_object(text), SERVER_FRAMES)
    return frame


# --------------------------------------------------------------------------
# Serializers


def _dumps(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def encode(frame: BaseModel) -> str:
    """Any frame model as compact JSON text (for clients and tests)."""
    return _dumps(frame.model_dump(mode="json"))


def reply(ref: str | int | None, code: int = 0, message: str | None = None) -> str:
    """A reply frame. An error code without a message gets the code's default message."""
    body: dict[str, Any] = {"type": "reply", "ref": ref, "code": int(code)}
    if message is None and code != 0:
        try:
            message = ERRORS[ApiErrorCode(code)].message
        except (ValueError, KeyError):
            pass
    if message is not None:
        body["message"] = message
    return _dumps(body)


def pong(ref: str | int | None) -> str:
    return _dumps({"type": "pong", "ref": ref})


def event(topic: Topic | str, seq: int, name: str, data: Mapping[str, Any]) -> str:
    """An event frame (an :class:`EventFrame` as JSON text, written without building
    the model: this is every subscriber's hot path). ``data`` may hold datetimes,
    decimals, UUIDs and enums.

    Raises ValueError for a bad topic, a ``seq`` below 1 (0 is allowed in a
    ``resync``), or an event that the contract does not list for that kind of topic.
    """
    parsed = topic if isinstance(topic, Topic) else parse_topic(topic)
    if type(seq) is not int or (seq < 1 and seq < _first_seq(name)):
        raise ValueError(f"seq must be an integer >= {_first_seq(name)}, not {seq!r}")
    if name != EventName.RESYNC and name not in TOPIC_EVENTS[parsed.kind]:
        raise ValueError(f"event {name!r} is not one of the {parsed.kind.value!r} topic")
    return _dumps({"type": "event", "topic": str(parsed), "seq": seq, "event": str(name), "data": dict(data)})


#: The events sent without ``seq``, never stored nor replayed (``feed-protocol.md``, "Ephemeral events").
EPHEMERAL_EVENTS: Final = frozenset({EventName.TYPING})


def ephemeral(topic: Topic | str, name: str, data: Mapping[str, Any]) -> str:
    """An ephemeral event frame: like :func:`event` without ``seq``. Raises ValueError for a bad topic or an
    event that is not ephemeral on that kind of topic."""
    parsed = topic if isinstance(topic, Topic) else parse_topic(topic)
    if name not in EPHEMERAL_EVENTS or name not in TOPIC_EVENTS[parsed.kind]:
        raise ValueError(f"event {name!r} is not an ephemeral event of the {parsed.kind.value!r} topic")
    return _dumps({"type": "event", "topic": str(parsed), "event": str(name), "data": dict(data)})


def resync(topic: Topic | str, seq: int) -> str:
    """The ``resync`` event: the events the client asked for are gone; reload the topic
    over HTTP, then resume after ``seq`` (the topic's last one, 0 if it has none yet)."""
    return event(topic, seq, EventName.RESYNC, {})
