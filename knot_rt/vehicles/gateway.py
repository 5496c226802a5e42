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

The vehicle's actor (``actors/vehicle.py``) hears ``LinkAttached`` when a
socket is accepted, ``DeviceCall`` for each well-formed CALL, ``LinkDetached``
when it ends; it answers the CALLs on the link itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors import ActorRef
from actors.vehicle import DeviceCall, LinkAttached, LinkDetached, VehicleMessage, VehicleReply
from protocols import vehicle as wire

from ..devices.gateway import DeviceConnection, Door, LinkTable, SecretHashes

VehicleRef = ActorRef[VehicleMessage, VehicleReply]


class VehicleDoor(Door[str]):
    kind = "vehicle"
    user_name = "serial number"
    path = wire.WS_PATH
    subprotocol = wire.SUBPROTOCOL
    max_frame_bytes = wire.MAX_FRAME_BYTES
    min_secret_length = wire.MIN_SECRET_LENGTH

    def __init__(
        self,
        credentials: Callable[[str], Awaitable[tuple[int, str] | None]],
        secret_hashes: SecretHashes,
        actor_for: Callable[[int], Awaitable[VehicleRef]],
        *,
        links: LinkTable | None = None,
    ) -> None:
        """``credentials``: ``(vehicle id, stored secret hash)`` of the free-floating vehicle with a secret
        that has this serial number; ``secret_hashes``: the same by vehicle ids."""
        super().__init__(credentials, secret_hashes, actor_for, links=links)

    def user(self, user: str) -> str | None:
        return user if wire.valid_serial(user) else None

    def parse_frame(self, text: str | bytes) -> wire.Frame:
        return wire.parse_frame(text)

    def write_call(self, call_id: str, action: str, payload: wire.Payload) -> str:
        return wire.call(call_id, action, payload)

    def attached(self, connection: DeviceConnection) -> VehicleMessage:
        return LinkAttached(connection)

    def detached(self, connection: DeviceConnection) -> VehicleMessage:
        return LinkDetached(connection)

    def incoming(self, connection: DeviceConnection, call: wire.Call) -> VehicleMessage:
        return DeviceCall(connection, call)
