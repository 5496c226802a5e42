"""What stations and free-floating vehicles share: the gateway their sockets come through, their secrets."""
