"""A feed event is encoded once, whatever the number of its subscribers, and the text is the contract's."""

from __future__ import annotations

from knot_rt.bus import Ephemeral, FeedEvent, Resync
from knot_rt.web.feed import encode_item
from protocols import feed as wire

DATA = {"cluster_id": 17, "available_vehicles": 5, "free_spots": 3, "total_spots": 8}


def test_an_event_is_encoded_once_and_as_the_contract_writes_it() -> None:
    event = FeedEvent("cluster:17", 4, "cluster.updated", DATA)
    first = encode_item("cluster:17", event)
    assert first == wire.event("cluster:17", 4, "cluster.updated", DATA)
    assert all(encode_item("cluster:17", event) is first for _ in range(3))  # the same text, not a new one
    assert event == FeedEvent("cluster:17", 4, "cluster.updated", DATA)  # the memo is no part of the value
    assert "_frame" not in repr(event)


def test_a_users_own_topic_is_encoded_with_the_clients_name_for_it() -> None:
    event = FeedEvent("user:42", 1, "rent.started", {"rent_id": 7})
    assert encode_item("user", event) == wire.event("user", 1, "rent.started", {"rent_id": 7})


def test_resync_and_ephemeral_frames_are_the_contracts() -> None:
    assert encode_item("cluster:17", Resync("cluster:17", 9)) == wire.resync("cluster:17", 9)
    typing = Ephemeral("report:3", "typing", {"side": "user"})
    assert encode_item("report:3", typing) == wire.ephemeral("report:3", "typing", {"side": "user"})


def test_an_event_the_topic_does_not_list_is_not_sent() -> None:
    assert encode_item("cluster:17", FeedEvent("cluster:17", 1, "typing", {})) is None
    assert encode_item("cluster:17", Ephemeral("cluster:17", "typing", {})) is None
