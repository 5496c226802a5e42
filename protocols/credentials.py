"""HTTP Basic credentials of a device's WebSocket upgrade (stations now, vehicles next).

Both device protocols (``station-protocol.md``, ``vehicle-protocol.md``)
authenticate the upgrade request with HTTP Basic auth: user = the device's id
(a station id, a vehicle's serial number), password = its secret. A device (the
simulator) writes the header with :func:`basic_authorization`; the gateway reads
it with :func:`parse_basic_authorization` and then applies its own protocol's
rules to the user and the secret (a station id is 1..19 ASCII digits, a secret
has at least ``MIN_SECRET_LENGTH`` characters).

Choices: parsing never raises. Anything that is not ``Basic <base64 of
UTF-8 "user:secret">`` is None, so a hostile header is a plain 401 at the
gateway, like a wrong secret. The encoded part is bounded by the caller
(``max_length``) before it is decoded, so a huge header costs no base64 work.
"""

from __future__ import annotations

import base64
import binascii


def basic_authorization(user: str | int, secret: str) -> str:
    """The ``Authorization`` header value: ``Basic <base64 of "user:secret">``."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


def parse_basic_authorization(header: str | None, *, max_length: int) -> tuple[str, str] | None:
    """``(user, secret)`` from an ``Authorization`` header value; None for anything else.

    The scheme is case-insensitive; the base64 must be strict (no stray
    characters), at most ``max_length`` characters, and decode to UTF-8 with a
    colon. The secret is everything after the first colon (it may hold colons).
    """
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > max_length:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return user, secret
