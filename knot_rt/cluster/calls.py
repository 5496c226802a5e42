"""Calls from one server process to another, through PostgreSQL.

A call is a row of ``cluster_calls`` (the operation's name and its JSON arguments) and a NOTIFY
``call <id>`` on the callee's own channel, written in one statement. The callee reads the row, runs the
operation's handler, writes the answer (a JSON value, or an error code and message) into the row and
NOTIFYs ``reply <id>`` on the caller's channel, in one statement; the caller reads and deletes the row.

Used where a request reaches a process that does not hold the device it is about: an operator's command
or a rider's unlock for a station whose socket another process holds.

Choices and costs:

- Four round trips on top of the operation (write, read, answer, take), a few milliseconds on loopback:
  the price of a request that landed on the wrong process; the load balancer's stickiness keeps it rare.
- Errors cross as ``ApiError`` codes: the caller raises the callee's code and message, so a refusal
  reads the same whichever process answered. Anything else the handler raises is code 1 (internal).
- A callee that dies mid-call leaves the caller waiting until its timeout: 504 code 40, "no answer",
  as a station that does not answer. Rows of calls nobody took are deleted after an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import OneShot
from protocols.errors import ErrorCode

from ..db import Database, repeat
from ..errors import ApiError
from .link import ClusterLink, node_channel

log = logging.getLogger(__name__)

Operation = Callable[[dict[str, Any]], Awaitable[Any]]
EARLY_KEPT = 1024


class RemoteCalls:
    def __init__(self, db: Database, link: ClusterLink) -> None:
        self.db = db
        self.link = link
        self._operations: dict[str, Operation] = {}
        self._waiting: dict[int, OneShot[None]] = {}
        # Answers that arrived before their caller started waiting (bounded: a reply nobody waits for is
        # forgotten after EARLY_KEPT others)
        self._early: dict[int, None] = {}
        link.listen_own(self._notified)

    def handle(self, op: str, operation: Operation) -> None:
        """Serve ``op`` for the other processes: ``operation(args)`` returns a JSON value or raises."""
        self._operations[op] = operation

    async def call(self, node: int, op: str, args: dict[str, Any], *, timeout: float) -> Any:  # noqa: ASYNC109
        """Run ``op`` on process ``node``; its answer, or its ``ApiError``. 504 code 40 without an answer
        within ``timeout`` seconds; 503 code 48 when the database cannot take the call."""
        me = self.link.node
        call_id: int = await self.db.fetchval(
            """WITH c AS (INSERT INTO cluster_calls (caller, callee, op, args) VALUES ($1, $2, $3, $4) RETURNING id)
               SELECT id FROM c, pg_notify($5, 'call ' || c.id)""",
            me, node, op, args, node_channel(node),
        )
        answered: OneShot[None] = OneShot()
        self._waiting[call_id] = answered
        try:
            if call_id in self._early:
                del self._early[call_id]
            else:
                with trio.move_on_after(timeout):
                    await answered.wait()
                if not answered.settled:
                    raise ApiError(ErrorCode.DEVICE_TIMEOUT, f"no answer from the process that holds it ({op})")
        finally:
            self._waiting.pop(call_id, None)
        row = await self.db.fetchrow(
            "DELETE FROM cluster_calls WHERE id = $1 RETURNING reply, error_code, error_message", call_id
        )
        if row is None:  # pragma: no cover - only we delete our rows
            raise ApiError(ErrorCode.INTERNAL, "the answer was lost")
        if row["error_code"] is not None:
            try:
                code = ErrorCode(row["error_code"])
            except ValueError:
                code = ErrorCode.INTERNAL
            raise ApiError(code, row["error_message"] or None)
        return row["reply"]

    def _notified(self, payload: str) -> None:
        kind, _, raw = payload.partition(" ")
        if not raw.isdigit():
            return
        call_id = int(raw)
        if kind == "call":
            self.link.spawn(self._serve, call_id)
        elif kind == "reply":
            waiting = self._waiting.get(call_id)
            if waiting is not None:
                waiting.resolve(None)
            else:
                self._early[call_id] = None
                if len(self._early) > EARLY_KEPT:
                    del self._early[next(iter(self._early))]

    async def _serve(self, call_id: int) -> None:
        me = self.link.node
        try:
            row = await self.db.fetchrow(
                "SELECT op, args FROM cluster_calls WHERE id = $1 AND callee = $2 AND NOT answered", call_id, me
            )
            if row is None:
                return
            reply: Any = None
            code: int | None = None
            message: str | None = None
            operation = self._operations.get(row["op"])
            try:
                if operation is None:
                    raise ApiError(ErrorCode.INTERNAL, f"unknown operation {row['op']!r}")
                if not isinstance(row["args"], dict):
                    raise ApiError(ErrorCode.INTERNAL, f"malformed call: the arguments of {row['op']!r} are not an object")
                reply = await operation(row["args"])
            except ApiError as error:
                code, message = int(error.code), error.message
            except Exception:
                log.exception("[cluster] call %s (%s) failed", call_id, row["op"])
                code, message = int(ErrorCode.INTERNAL), "the process that holds it failed"
            await self.db.execute(
                """WITH u AS (UPDATE cluster_calls SET answered = true, reply = $2, error_code = $3, error_message = $4
                              WHERE id = $1 RETURNING caller)
                   SELECT pg_notify('knot_node_' || u.caller, 'reply ' || $1::bigint) FROM u""",
                call_id, reply, code, message,
            )
        except Exception:
            log.exception("[cluster] call %s could not be served", call_id)

    async def run_pruner(self, every: float = 600.0) -> None:
        """Forget calls nobody answered or took (a process died mid-call)."""

        async def prune() -> None:
            await self.db.execute("DELETE FROM cluster_calls WHERE created_at < now() - interval '1 hour'")

        await repeat("[cluster] pruning old calls", prune, every, wait_first=True)
