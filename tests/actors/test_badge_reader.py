"""The pending-link bookkeeping of a station's badge readers (pure: times are given)."""

from __future__ import annotations

from actors.badge_reader import BadgeReaders


def test_one_link_per_reader_until_taken_or_dropped() -> None:
    readers = BadgeReaders(window=60)
    first = readers.start(1, "Work", 2, now=0)
    assert first is not None and first.deadline == 60
    assert readers.start(2, "Other", 2, now=1) is None  # busy
    assert readers.start(2, "Other", 3, now=1) is not None  # another spot's reader
    assert readers.take(2, now=59) is first
    assert readers.take(2, now=59) is None  # consumed by the first badge
    assert readers.drop(first) is False  # its timer finds it gone
    assert readers.start(2, "Again", 2, now=59) is not None


def test_a_late_badge_completes_nothing_and_the_timer_fails_the_link() -> None:
    readers = BadgeReaders(window=10)
    link = readers.start(1, "Late", None, now=0)
    assert link is not None
    assert readers.take(None, now=10) is None  # at the deadline: too late
    assert readers.start(2, "Next", None, now=10) is None  # held until its expiry is handled
    assert readers.drop(link) is True and len(readers) == 0


def test_a_badge_read_at_a_spot_completes_the_station_wide_link() -> None:
    readers = BadgeReaders(window=10)
    link = readers.start(1, "Keys", None, now=0)
    assert readers.take(4, now=1) is link


def test_a_timer_never_expires_a_newer_link_at_the_same_reader() -> None:
    readers = BadgeReaders(window=10)
    old = readers.start(1, "Old", 1, now=0)
    assert old is not None and readers.take(1, now=1) is old
    new = readers.start(1, "New", 1, now=2)
    assert readers.drop(old) is False and len(readers) == 1 and new is not None
