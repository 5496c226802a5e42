"""Everything one process serves, in one nursery: the HTTP app and the background tasks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Quart

from protocols import station as station_wire
from protocols import vehicle as vehicle_wire

from .api.app import create_app
from .context import Services
from .maintenance.automatic import offline_at_start

log = logging.getLogger(__name__)


def hypercorn_config(host: str, port: int, fd: int | None = None) -> Config:
    config = Config()
    config.bind = [f"fd://{fd}"] if fd is not None else [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 5
    config.keep_alive_timeout = 30
    config.websocket_max_message_size = 64 * 1024  # feed frames are small; hypercorn's default is 16 MiB
    return config


@dataclass(frozen=True, slots=True)
class Bound:
    """Where the server listens."""

    http: list[str]
    station_port: int

    @property
    def base_url(self) -> str:
        return self.http[0]

    def station_url(self, host: str = "127.0.0.1") -> str:
        return f"ws://{host}:{self.station_port}{station_wire.WS_PATH}"

    def vehicle_url(self, host: str = "127.0.0.1") -> str:
        """The free-floating vehicles' socket: the same port as the stations', another path."""
        return f"ws://{host}:{self.station_port}{vehicle_wire.WS_PATH}"


async def run_server(
    svc: Services,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until ``shutdown`` is set; reports where it listens.

    The database must be reachable at start (the catalog and the stations are loaded);
    after that an outage gives 503 code 48 on the routes that need it, and the service
    recovers by itself when PostgreSQL is back.

    Stop order: HTTP first (hypercorn drains its connections), then the station
    gateway and the actors (reverse start order), then the background tasks.
    """
    app = create_app(svc)
    await svc.catalog.load()
    if shutdown is None:
        shutdown = trio.Event()
    config = hypercorn_config(svc.settings.host, svc.settings.port, svc.settings.http_fd)
    try:
        await _serve_all(svc, app, config, shutdown, task_status)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await svc.payments.aclose()  # the payment provider's HTTP client, last (the worker used it)


async def _serve_all(
    svc: Services, app: Quart, config: Config, shutdown: trio.Event, task_status: trio.TaskStatus[Bound]
) -> None:
    async with trio.open_nursery() as background:
        # Background loops never end on an error: each logs it and retries with back-off,
        # so a database outage leaves them waiting, not the process dead.
        background.start_soon(svc.mail.run)
        background.start_soon(svc.bus.run_pruner)
        background.start_soon(svc.limiter.run)
        background.start_soon(svc.catalog.run, svc.settings.catalog_refresh_seconds)
        if svc.settings.payment_worker:
            background.start_soon(svc.payment_worker.run)
        if svc.cluster is not None:  # joined before any device connects: ownership needs the link
            node = await background.start(svc.cluster.run)
            log.info("[cluster] this process is node %s", node)
        async with trio.open_nursery() as live:
            station_port: int = await live.start(
                partial(svc.stations.run, fd=svc.settings.gateway_fd), svc.settings.host, svc.settings.station_port,
            )
            live.start_soon(svc.rents.run)
            live.start_soon(svc.maintenance_watch.run, offline_at_start(svc.stations))
            live.start_soon(svc.maintenance_live.run)
            await live.start(svc.support.run)
            async with trio.open_nursery() as http:
                binds: list[str] = await http.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
                log.info("serving HTTP on %s", ", ".join(binds))
                task_status.started(Bound(binds, station_port))
            # hypercorn has closed its connections: stop the gateway and the actors.
            live.cancel_scope.cancel()
        background.cancel_scope.cancel()
