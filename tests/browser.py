"""What the console's browser tests share: the machine's Chromium driven by Playwright, and a live server.

The browser is Debian's ``chromium`` (``KNOT_CHROMIUM`` to point elsewhere), launched by Playwright's own driver
(its pip wheel carries it; ``playwright install`` is never run). Without it the tests are skipped, loudly.

``console_server`` is ``tests/live_server.py``'s server (the demo city in a database of its own, hypercorn on
port 0 in a thread) with a data folder of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.live_server import LiveServer, live_server

CHROMIUM = os.environ.get("KNOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver, or set KNOT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (make: pip install -r requirements.lock)"
    return None


ConsoleServer = LiveServer


@contextmanager
def console_server(database_url: str, **settings: Any) -> Iterator[LiveServer]:
    """Serve ``database_url`` (the demo loaded) on loopback ports until the block ends, with a data folder of
    its own."""
    data_dir = Path(tempfile.mkdtemp(prefix="knot-console-"))
    try:
        with live_server(database_url, data_dir, **settings) as live:
            yield live
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
