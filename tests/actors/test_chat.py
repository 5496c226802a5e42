"""The chat actor alone, with an in-memory store standing for the database (the only fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from actors import ActorCrashed, ActorRef, ActorSpec, ChildStartFailed, Supervisor
from actors.chat import (
    ChatActor,
    ChatMessage,
    ChatMessageIn,
    ChatReply,
    ChatState,
    ChatView,
    Crash,
    GetView,
    MarkRead,
    Post,
    Posted,
    Refused,
    Side,
    Typing,
    UnknownReport,
)

ChatRef = ActorRef[ChatMessageIn, ChatReply]


@dataclass
class MemoryChatStore:
    """The report's rows: its messages (id, side) and read markers; typing events heard."""

    user_id: int = 7
    messages: list[ChatMessage] = field(default_factory=list)
    read_up_to: dict[Side, int] = field(default_factory=lambda: {Side.USER: 0, Side.SUPPORT: 0})
    closed: bool = False
    typed: list[tuple[Side, int]] = field(default_factory=list)
    loads: int = 0
    fail_next_append: bool = False

    def _unread(self, side: Side) -> int:
        return sum(1 for m in self.messages if m.side is side.other and m.id > self.read_up_to[side])

    async def load(self, report_id: int) -> ChatState | None:
        await trio.lowlevel.checkpoint()
        self.loads += 1
        if report_id != 1:
            return None
        return ChatState(report_id, self.user_id, 3, self.messages[-1].id if self.messages else 0,
                         dict(self.read_up_to), {s: self._unread(s) for s in Side})

    async def append(self, state: ChatState, side: Side, author_id: int | None, body: str | None,
                     image_id: int | None, unread: dict[Side, int]) -> ChatMessage | Refused:
        await trio.lowlevel.checkpoint()
        if self.fail_next_append:  # the transaction fails: nothing written
            self.fail_next_append = False
            raise RuntimeError("database gone")
        if self.closed:
            return Refused("closed")
        message = ChatMessage(len(self.messages) + 1, 1, side, author_id, body, image_id, datetime.now(UTC))
        self.messages.append(message)
        self.read_up_to[side] = message.id
        assert unread == {s: self._unread(s) for s in Side}  # the actor's counts are the database's
        return message

    async def mark_read(self, state: ChatState, side: Side, up_to: int) -> int:
        await trio.lowlevel.checkpoint()
        self.read_up_to[side] = max(self.read_up_to[side], up_to)
        return self._unread(side)

    def typing(self, report_id: int, side: Side, until_ms: int) -> None:
        self.typed.append((side, until_ms))


@asynccontextmanager
async def chat(store: MemoryChatStore, report_id: int = 1, idle_after: float = float("inf")) -> AsyncIterator[ChatRef]:
    spec = ActorSpec(f"chat:{report_id}", lambda: ChatActor(report_id, store, idle_after=idle_after), kind="chat")
    async with Supervisor("chats", [spec]).running() as sup:
        ref = sup.child(spec.child_id)
        assert isinstance(ref, ActorRef)
        yield ref


async def view(ref: ChatRef) -> ChatView:
    answer = await ref.ask(GetView())
    assert isinstance(answer, ChatView)
    return answer


async def test_posts_count_unread_for_the_other_side_and_read_for_the_author() -> None:
    store = MemoryChatStore()
    async with chat(store) as ref:
        first = await ref.ask(Post(Side.USER, 7, "hello"))
        assert isinstance(first, Posted) and first.message.id == 1
        await ref.ask(Post(Side.USER, 7, "anyone?"))
        seen = await view(ref)
        assert (seen.unread, seen.read_up_to, seen.last_message_id) == (
            {Side.USER: 0, Side.SUPPORT: 2}, {Side.USER: 2, Side.SUPPORT: 0}, 2)
        await ref.ask(Post(Side.SUPPORT, 99, "here"))
        seen = await view(ref)
        assert seen.unread == {Side.USER: 1, Side.SUPPORT: 0}
        read = await ref.ask(MarkRead(Side.USER, 50))  # beyond the last: up to the last
        assert isinstance(read, ChatView)
        assert (read.unread[Side.USER], read.read_up_to[Side.USER]) == (0, 3)
        backwards = await ref.ask(MarkRead(Side.USER, 1))
        assert isinstance(backwards, ChatView) and backwards.read_up_to[Side.USER] == 3


async def test_a_refused_message_changes_nothing() -> None:
    store = MemoryChatStore(closed=True)
    async with chat(store) as ref:
        assert await ref.ask(Post(Side.USER, 7, "hello")) == Refused("closed")
        assert (await view(ref)).last_message_id == 0


async def test_state_is_rebuilt_from_the_store_after_a_crash() -> None:
    store = MemoryChatStore()
    async with chat(store) as ref:
        await ref.ask(Post(Side.SUPPORT, 99, "a"))
        await ref.ask(Post(Side.SUPPORT, 99, "b"))
        before = await view(ref)
        with pytest.raises(ActorCrashed):
            await ref.ask(Crash())
        after = await view(ref)
        assert store.loads == 2
        assert (after.unread, after.read_up_to, after.last_message_id) == (
            before.unread, before.read_up_to, before.last_message_id)


async def test_a_failed_write_crashes_and_the_next_message_is_served_from_the_database() -> None:
    store = MemoryChatStore()
    async with chat(store) as ref:
        store.fail_next_append = True
        with pytest.raises(ActorCrashed):
            await ref.ask(Post(Side.USER, 7, "lost"))
        answer = await ref.ask(Post(Side.USER, 7, "kept"))
        assert isinstance(answer, Posted) and answer.message.id == 1
    assert [m.body for m in store.messages] == ["kept"]


async def test_typing_is_announced_at_most_once_a_second_and_forgotten_when_posting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryChatStore()
    async with chat(store) as ref:
        for _ in range(5):
            await ref.ask(Typing(Side.USER))
        assert [side for side, _ in store.typed] == [Side.USER]
        assert Side.USER in (await view(ref)).typing_until
        await trio.sleep(1.5)
        await ref.ask(Typing(Side.USER))
        assert len(store.typed) == 2
        await ref.ask(Post(Side.USER, 7, "done typing"))
        assert (await view(ref)).typing_until == {}


async def test_an_idle_chat_stops_itself(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryChatStore()
    async with chat(store, idle_after=60) as ref:
        await ref.ask(Post(Side.USER, 7, "hi"))
        await trio.sleep(30)
        await view(ref)  # used: the clock starts again
        await trio.sleep(45)
        assert not ref.stopped
        await trio.sleep(30)
        assert ref.stopped


async def test_an_unknown_report_fails_to_start() -> None:
    store = MemoryChatStore()
    spec = ActorSpec("chat:2", lambda: ChatActor(2, store), kind="chat")
    with pytest.raises(ChildStartFailed) as failed:
        async with Supervisor("chats", [spec]).running():
            pass
    assert isinstance(failed.value.__cause__, UnknownReport)
