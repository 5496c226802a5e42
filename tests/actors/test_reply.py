"""OneShot: settled once (value or error), awaited by any number of tasks, bounded waits."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.reply import OneShot


async def test_every_waiter_gets_the_value_and_later_settles_are_ignored() -> None:
    shot: OneShot[dict[str, int]] = OneShot()
    answer = {"spot": 2}
    got: list[dict[str, int]] = []

    async def waiter() -> None:
        got.append(await shot.wait())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not shot.settled and got == []  # nobody returns before the settle
        assert shot.resolve(answer) is True
    assert shot.settled and len(got) == 3 and all(value is answer for value in got)

    assert shot.resolve({"spot": 3}) is False  # the first outcome stands
    assert shot.fail(RuntimeError("late")) is False
    assert await shot.wait() is answer  # and waiting again gives it again


async def test_every_waiter_gets_the_error_and_later_settles_are_ignored() -> None:
    shot: OneShot[int] = OneShot()
    error = ConnectionError("link lost")
    raised: list[BaseException] = []

    async def waiter() -> None:
        try:
            await shot.wait()
        except ConnectionError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert shot.fail(error) is True
    assert raised == [error, error, error]

    assert shot.resolve(7) is False
    with pytest.raises(ConnectionError) as again:
        await shot.wait()
    assert again.value is error


async def test_none_is_a_value_like_any_other() -> None:
    shot: OneShot[int | None] = OneShot()
    assert repr(shot) == "<OneShot pending>"
    assert shot.resolve(None) is True
    assert shot.settled and await shot.wait() is None
    assert shot.resolve(5) is False and await shot.wait() is None
    assert repr(shot) == "<OneShot resolved None>"


async def test_a_cancelled_wait_settles_nothing(autojump_clock: trio.testing.MockClock) -> None:
    shot: OneShot[str] = OneShot()
    with trio.move_on_after(5) as scope:
        await shot.wait()
    assert scope.cancelled_caught and not shot.settled
    # The producer settles it later; the next wait reads that outcome.
    assert shot.resolve("late answer") is True
    assert await shot.wait() == "late answer"


async def test_wait_within_gives_the_outcome_or_too_slow(autojump_clock: trio.testing.MockClock) -> None:
    shot: OneShot[str] = OneShot()
    with pytest.raises(trio.TooSlowError):
        await shot.wait_within(3)
    assert not shot.settled

    async def answer_after(seconds: float) -> None:
        await trio.sleep(seconds)
        shot.resolve("answered")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_after, 2)
        assert await shot.wait_within(3) == "answered"
    assert await shot.wait_within(0) == "answered"  # settled: no time needed

    failed: OneShot[str] = OneShot()
    failed.fail(LookupError("no station 9"))
    with pytest.raises(LookupError, match="no station 9"):
        await failed.wait_within(3)
    assert repr(failed) == "<OneShot failed LookupError('no station 9')>"


async def test_a_subclass_carries_its_own_fields() -> None:
    class Pending(OneShot[int]):
        __slots__ = ("action",)

        def __init__(self, action: str) -> None:
            super().__init__()
            self.action = action

    pending = Pending("ping")
    pending.resolve(1)
    assert (pending.action, await pending.wait()) == ("ping", 1)
    assert repr(pending) == "<Pending resolved 1>"
    with pytest.raises(AttributeError):
        pending.other = 2  # type: ignore[attr-defined]  # slots: no per-object dict
