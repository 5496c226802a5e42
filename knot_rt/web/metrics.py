"""``/health`` and Prometheus-style ``/metrics``."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify
from quart_schema import hide

from protocols.errors import ERRORS, ErrorCode

from ..context import services

bp = Blueprint("ops", __name__)


@bp.get("/health")
@hide
async def health() -> Response:
    """``ok`` (200), or ``degraded`` (503, what load balancers take as "send elsewhere") with the reasons
    while a part of the live side is down and waiting to be restarted, or PostgreSQL could not be reached
    by the last unit of work (HTTP itself still serves what it can)."""
    svc = services()
    down = dict(svc.stations.down())
    if not svc.db.available:
        down["database"] = "PostgreSQL cannot be reached"
    if not down:
        return jsonify({"code": 0, "status": "ok"})
    response = jsonify({
        "code": int(ErrorCode.SERVICE_UNAVAILABLE), "status": "degraded",
        "message": "; ".join(f"{name}: {why}" for name, why in sorted(down.items())),
        "down": [{"part": name, "reason": why} for name, why in sorted(down.items())],
    })
    response.status_code = ERRORS[ErrorCode.SERVICE_UNAVAILABLE].status
    return response


def _line(name: str, value: float, help_text: str, kind: str = "gauge", labels: str = "") -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name}{labels} {value}\n"


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    svc = services()
    stations = svc.stations
    actors = stations.metrics
    gateway = stations.station_door.counters
    vehicles = stations.vehicle_door
    parts = [
        _line("knot_stations_connected", len(stations.station_door.links), "stations with a live socket"),
        _line("knot_vehicles_connected", len(vehicles.links), "free-floating vehicles with a live socket"),
        _line("knot_stations_online", stations.live.online_stations, "stations booted and online"),
        _line("knot_station_connections_total", gateway.accepted, "station sockets accepted", "counter"),
        _line("knot_station_connections_refused_total", gateway.refused, "station upgrades refused", "counter"),
        _line("knot_station_connections_replaced_total", gateway.replaced, "older sockets replaced (4001)",
              "counter"),
        _line("knot_station_frames_total", gateway.frames_in, "frames received from stations", "counter"),
        _line("knot_station_frames_malformed_total", gateway.malformed, "malformed station frames", "counter"),
        _line("knot_station_connections_busy_total", stations.gateway.counters.busy,
              "device sockets closed at once: over the caps", "counter"),
        _line("knot_station_auth_throttled_total", gateway.throttled, "upgrades answered 429 after auth failures",
              "counter"),
        _line("knot_station_secret_rotated_total", gateway.rotated, "sockets closed after a secret rotation",
              "counter"),
        _line("knot_station_unavailable_total", gateway.unavailable, "sockets closed: the station's actor could not run",
              "counter"),
        _line("knot_station_handshakes", stations.gateway.handshakes, "device sockets not yet authenticated"),
        _line("knot_vehicle_connections_total", vehicles.counters.accepted, "vehicle sockets accepted", "counter"),
        _line("knot_vehicle_connections_refused_total", vehicles.counters.refused, "vehicle upgrades refused",
              "counter"),
        _line("knot_vehicle_frames_total", vehicles.counters.frames_in, "frames received from vehicles", "counter"),
        _line("knot_vehicle_frames_malformed_total", vehicles.counters.malformed, "malformed vehicle frames",
              "counter"),
        _line("knot_actor_restarts_total", actors.restarts_total, "actor restarts", "counter"),
        _line("knot_actor_given_up_total", actors.given_up_total, "actors stopped after crashing too often", "counter"),
        _line("knot_actor_escalations_total", actors.escalations_total, "supervisors that gave up", "counter"),
        _line("knot_actor_subtrees_down", len(stations.down()), "actor subtrees down, waiting to restart"),
        _line("knot_actor_max_mailbox_depth", actors.max_mailbox_depth(), "deepest actor mailbox"),
        _line("knot_feed_connections", svc.hub.connections, "app feed sockets"),
        _line("knot_feed_subscribers", svc.bus.subscriber_count, "feed connections with a subscription"),
        _line("knot_feed_events_total", svc.bus.published, "feed events delivered locally", "counter"),
        _line("knot_mail_sent_total", svc.mail.sent, "mails sent over SMTP", "counter"),
    ]
    running = "".join(
        f'knot_actors_running{{kind="{kind}"}} {count}\n' for kind, count in sorted(actors.running_by_kind().items())
    )
    parts.append(f"# HELP knot_actors_running running actors by kind\n# TYPE knot_actors_running gauge\n{running}")
    return Response("".join(parts), content_type="text/plain; version=0.0.4")
