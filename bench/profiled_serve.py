"""``knot-rt serve`` with a profiler switched by signals, for the benches: SIGUSR1 starts cProfile, SIGUSR2
stops it and writes the profile to the file named by the first argument.

Run: ``python -m bench.profiled_serve FILE`` (the environment configures the server as for ``knot-rt serve``).
Only the measured window is profiled, not the start (imports, migrations, the catalog's load).

With ``--memory``, the profiler is ``tracemalloc`` instead (``MEMORY_FRAMES`` frames a block): SIGUSR1 starts
tracing, SIGUSR2 writes a snapshot of the blocks allocated since then and still alive to FILE
(``tracemalloc.Snapshot.load``). Only what the measured window left behind is counted.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import tracemalloc
from types import FrameType

from knot_rt.cli import main

MEMORY_FRAMES = 6


def serve_traced(path: str) -> int:
    def start(signum: int, frame: FrameType | None) -> None:
        tracemalloc.start(MEMORY_FRAMES)

    def stop(signum: int, frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        snapshot.dump(path + ".part")
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return main(["serve"])


def serve(path: str) -> int:
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return main(["serve"])


if __name__ == "__main__":
    if sys.argv[1] == "--memory":
        sys.exit(serve_traced(sys.argv[2]))
    sys.exit(serve(sys.argv[1]))
