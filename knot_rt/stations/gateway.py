"""The stations' door of the device gateway (``station-protocol.md``, ``knot_rt/devices/gateway.py``).

What is the stations' own: the path ``/api/stations/ws``, the ``knot-station.v1``
subprotocol, 64 KiB frames parsed by ``protocols.station``, and the Basic-auth
user, a station id. A user that is not 1..19 ASCII digits within bigint
(``"²"`` is a digit to Python, 5,000 digits do not fit) is a plain 401, like a
wrong secret. The socket, its caps, throttling, pings, replacement and the
rotated-secret check are the gateway's, shared with the vehicles' door.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors import ActorRef
from actors.station import StationMessage, StationReply
from protocols import station as wire

from ..devices.gateway import Door, LinkTable, SecretHashes

StationRef = ActorRef[StationMessage, StationReply]


def station_id_of(user: str) -> int | None:
    """The station id a Basic-auth user names: 1 to 19 ASCII digits within bigint; None for anything else.

    ``str.isdigit`` alone also takes ``"²"`` (which ``int`` refuses) and 5,000 digits (which ``int``
    refuses too)."""
    if not (0 < len(user) <= wire.MAX_STATION_ID_DIGITS and user.isascii() and user.isdigit()):
        return None
    station_id = int(user)
    return station_id if 0 < station_id <= wire.INT64_MAX else None


class StationDoor(Door[int]):
    kind = "station"
    user_name = "id"
    path = wire.WS_PATH
    subprotocol = wire.SUBPROTOCOL
    max_frame_bytes = wire.MAX_FRAME_BYTES
    min_secret_length = wire.MIN_SECRET_LENGTH

    def __init__(
        self,
        secret_hash: Callable[[int], Awaitable[str | None]],
        secret_hashes: SecretHashes,
        actor_for: Callable[[int], Awaitable[StationRef]],
        *,
        links: LinkTable | None = None,
    ) -> None:
        async def lookup(station_id: int) -> tuple[int, str] | None:
            stored = await secret_hash(station_id)
            return None if stored is None else (station_id, stored)

        super().__init__(lookup, secret_hashes, actor_for, links=links)

    def user(self, user: str) -> int | None:
        return station_id_of(user)

    def parse_frame(self, text: str | bytes) -> wire.Frame:
        return wire.parse_frame(text)

    def write_call(self, call_id: str, action: str, payload: wire.Payload) -> str:
        return wire.call(call_id, action, payload)
