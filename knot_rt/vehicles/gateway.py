"""The free-floating vehicles' door of the device gateway (``vehicle-protocol.md``,
``knot_rt/devices/gateway.py``).

What is the vehicles' own: the path ``/api/vehicles/ws`` on the station
gateway's port, the ``knot-vehicle.v1`` subprotocol, 16 KiB frames parsed by
``protocols.vehicle``, and the Basic-auth user, the vehicle's serial number
(``protocols.vehicle.valid_serial``: 1..64 printable characters, no colon;
anything else is a plain 401, like a wrong secret). Only a vehicle with an IoT
module (``free_floating``) and a secret may connect; a docked vehicle talks
through its station. The socket, its caps, throttling, pings, replacement and
the rotated-secret check are the gateway's, shared with the stations' door.

The vehicle's actor (``actors/vehicle.py``) hears ``Attached`` when a socket is
accepted, ``Incoming`` for each well-formed CALL, ``Detached`` when it ends
(``actors/link.py``, as a station's actor does); it answers the CALLs on the
link itself.
"""

from __future__ import annotations

from actors import ActorRef
from actors.vehicle import VehicleMessage, VehicleReply
from protocols import vehicle as wire

from ..devices.gateway import Door

VehicleRef = ActorRef[VehicleMessage, VehicleReply]


class VehicleDoor(Door[str]):
    """Built with ``lookup``: ``(vehicle id, stored secret hash)`` of the free-floating vehicle with a secret
    that has this serial number; ``secret_hashes``: the same by vehicle ids (``PgVehicleStore``)."""

    kind = "vehicle"
    user_name = "serial number"
    path = wire.WS_PATH
    subprotocol = wire.SUBPROTOCOL
    max_frame_bytes = wire.MAX_FRAME_BYTES
    min_secret_length = wire.MIN_SECRET_LENGTH

    def user(self, user: str) -> str | None:
        return user if wire.valid_serial(user) else None

    def parse_frame(self, text: str | bytes) -> wire.Frame:
        return wire.parse_frame(text)

    def write_call(self, call_id: str, action: str, payload: wire.Payload) -> str:
        return wire.call(call_id, action, payload)
