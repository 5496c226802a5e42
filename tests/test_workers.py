"""``knot-rt serve --workers N``'s parent (``knot_rt/workers.py``), without a server."""

from __future__ import annotations

import os
import sys

import pytest
import trio
import trio._core._thread_cache as thread_cache

from knot_rt.workers import READY, Worker, _keep_running, _stop_all


async def test_a_worker_outlives_the_thread_that_started_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers end with their parent (PR_SET_PDEATHSIG), and Linux sends that signal when the *thread*
    that forked the child ends, not its process. trio's ``open_process`` forks in a worker thread of its
    cache, which ends after ``IDLE_TIMEOUT`` (10 s) idle: every worker then got SIGTERM 10 s after its start,
    and was restarted, over and over. The timeout is shortened here (trio's private module) to see it fast."""
    monkeypatch.setattr(thread_cache, "IDLE_TIMEOUT", 0.1)
    worker = Worker(0)
    stopping = trio.Event()
    command = [sys.executable, "-c", f"import time; print({READY!r}, flush=True); time.sleep(60)"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep_running, worker, command, dict(os.environ), stopping)
        with trio.fail_after(30):
            await worker.ready.wait()
        assert worker.process is not None
        first = worker.process
        await trio.sleep(1.5)  # many idle timeouts of the thread cache
        assert worker.process is first and first.returncode is None
        os.kill(first.pid, 0)  # alive
        stopping.set()
        with trio.fail_after(30):
            await _stop_all([worker])
        nursery.cancel_scope.cancel()
    assert first.returncode is not None
