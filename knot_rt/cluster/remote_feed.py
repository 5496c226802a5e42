"""Feed events written by the other processes, handed to this process's subscribers in their topic's order.

Every event is written with its topic's next sequence number (``bus.append_event``) and, when several
processes share the database, announced at commit on ``knot_feed`` as ``<origin> <seq> <topic>``. Here,
one task takes the announcements of the others, keeps the highest sequence number per topic, and asks the
bus to read and deliver what its subscribers have not had (``FeedBus.deliver_announced``: one query per
topic with subscribers here, under the topic's lock, so a local event never passes a remote one). Topics
nobody here subscribes to cost the parsing of the announcement only.

Announcements of a topic's stations (``station:<id>``) also tell the live station views that a station held
elsewhere changed (``on_station``), whether or not anyone here subscribes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable

import trio

from protocols.feed import Topic, TopicError, TopicKind

from ..bus import Ephemeral, FeedBus
from .link import EPHEMERAL, FEED, ClusterLink

log = logging.getLogger(__name__)

MAX_PAYLOAD = 7900  # PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more


class RemoteFeed:
    def __init__(self, bus: FeedBus, link: ClusterLink) -> None:
        self.bus = bus
        self.link = link
        self.on_station: Callable[[int], None] | None = None
        self._send, self._receive = trio.open_memory_channel[tuple[str, int]](math.inf)
        link.listen(FEED, self._announced)
        link.listen(EPHEMERAL, self._ephemeral_told)
        bus.origin = lambda: link.node
        bus.share_ephemeral = self._share_ephemeral

    def _share_ephemeral(self, item: Ephemeral) -> None:
        """An ephemeral event (``typing``) has no row to point at: it travels in the notification itself,
        when it fits (a typing indicator always does); one that does not is for this process only."""
        payload = json.dumps({"o": self.link.node, "t": item.topic, "e": item.event, "d": item.data},
                             separators=(",", ":"))
        if len(payload.encode()) < MAX_PAYLOAD and self.link.node:
            try:
                self.link.spawn(self.link.notify, EPHEMERAL, payload)
            except Exception as exc:  # the link is down: an indicator lost, nothing more
                log.info("feed: an ephemeral event was not shared: %r", exc)

    def _ephemeral_told(self, payload: str) -> None:
        told = json.loads(payload)
        if told.get("o") == self.link.node:
            return
        self.bus.deliver_ephemeral_here(Ephemeral(str(told["t"]), str(told["e"]), dict(told["d"])))

    def _announced(self, payload: str) -> None:
        origin, _, rest = payload.partition(" ")
        raw_seq, _, topic = rest.partition(" ")
        if not (origin.isdigit() and raw_seq.isdigit() and topic):
            return
        if int(origin) == self.link.node:
            return  # ours: delivered at commit
        if self.on_station is not None:
            try:
                parsed = Topic.parse(topic)
            except TopicError:
                parsed = None
            if parsed is not None and parsed.kind is TopicKind.STATION and parsed.id is not None:
                self.on_station(parsed.id)
        self._send.send_nowait((topic, int(raw_seq)))

    async def run(self) -> None:
        while True:
            first = await self._receive.receive()
            pending: dict[str, int] = {first[0]: first[1]}
            while True:  # everything announced meanwhile, in one pass
                try:
                    topic, seq = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                pending[topic] = max(seq, pending.get(topic, 0))
            for topic, seq in pending.items():
                try:
                    await self.bus.deliver_announced(topic, seq)
                except Exception as exc:
                    log.warning("feed: the events of %s from another process could not be read: %r", topic, exc)
