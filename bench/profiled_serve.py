"""``knot-rt serve`` with a profiler switched by signals, for the benches: SIGUSR1 starts cProfile, SIGUSR2
stops it and writes the profile to the file named by the first argument.

Run: ``python -m bench.profiled_serve FILE`` (the environment configures the server as for ``knot-rt serve``).
Only the measured window is profiled, not the start (imports, migrations, the catalog's load).
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType

from knot_rt.cli import main


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
    sys.exit(serve(sys.argv[1]))
