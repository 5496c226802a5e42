"""Several server processes on one PostgreSQL: ownership of devices, calls, and shared events."""
