"""Everything one process serves, in one nursery: the HTTP app and the background tasks."""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .context import Services
from .web.app import create_app

log = logging.getLogger(__name__)


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 5
    config.keep_alive_timeout = 30
    return config


async def run_server(
    svc: Services,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until ``shutdown`` is set; reports the bound URLs."""
    app = create_app(svc)
    if shutdown is None:
        shutdown = trio.Event()
    config = hypercorn_config(svc.settings.host, svc.settings.port)
    async with trio.open_nursery() as background:
        background.start_soon(svc.mail.run)
        async with trio.open_nursery() as http:
            binds: list[str] = await http.start(
                partial(serve, app, config, shutdown_trigger=shutdown.wait)
            )
            log.info("serving HTTP on %s", ", ".join(binds))
            task_status.started(binds)
        # hypercorn has closed its connections: stop the background tasks.
        background.cancel_scope.cancel()
