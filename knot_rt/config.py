"""Service configuration from options and environment variables."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from protocols import station as station_wire
from protocols import vehicle as vehicle_wire

from .files import write_private_file

MIN_SECRET_KEY_BYTES = 32
#: A rider unlocks a free-floating vehicle from at most this far from its last known position (metres; 403/31).
FREE_FLOATING_UNLOCK_METRES = 100.0


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line meant for the user."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    return value


def parse_trusted_proxies(raw: str) -> tuple[str, ...]:
    """``KNOT_TRUSTED_PROXIES``: addresses or CIDRs, separated by commas or spaces; checked here."""
    found = tuple(part for part in raw.replace(",", " ").split() if part)
    for part in found:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError as exc:
            raise ConfigError(f"KNOT_TRUSTED_PROXIES: {part!r} is not an address or a CIDR") from exc
    return found


@dataclass(frozen=True)
class RateLimits:
    """`limits` rate strings, per key kind."""

    login_per_address: str = "10/minute"
    login_per_client: str = "60/minute"
    second_factor_per_user: str = "5/minute"
    second_factor_per_client: str = "30/minute"
    password_reset_per_address: str = "3/hour"
    password_reset_per_client: str = "20/hour"
    confirmation_per_address: str = "3/hour"
    confirmation_per_client: str = "20/hour"
    register_per_client: str = "20/hour"
    discount_code_per_user: str = "20/hour"
    report_per_user: str = "10/hour"  # new support reports
    report_message_per_user: str = "30/minute"  # chat messages (text and images) of a user, on every report


@dataclass(frozen=True)
class SocialConfig:
    apple_jwks_url: str | None = None
    apple_audience: str | None = None
    apple_issuer: str = "https://appleid.apple.com"
    google_jwks_url: str | None = None
    google_audience: str | None = None
    google_issuers: tuple[str, ...] = ("https://accounts.google.com", "accounts.google.com")
    facebook_graph_url: str | None = None
    facebook_app_id: str | None = None
    facebook_app_secret: str | None = None
    jwks_cache_seconds: int = 3600

    @classmethod
    def from_env(cls) -> SocialConfig:
        env = os.environ.get
        return cls(
            apple_jwks_url=env("KNOT_APPLE_JWKS_URL"),
            apple_audience=env("KNOT_APPLE_AUDIENCE"),
            apple_issuer=env("KNOT_APPLE_ISSUER", "https://appleid.apple.com"),
            google_jwks_url=env("KNOT_GOOGLE_JWKS_URL"),
            google_audience=env("KNOT_GOOGLE_AUDIENCE"),
            google_issuers=tuple(
                env("KNOT_GOOGLE_ISSUERS", "https://accounts.google.com,accounts.google.com").split(",")
            ),
            facebook_graph_url=env("KNOT_FACEBOOK_GRAPH_URL"),
            facebook_app_id=env("KNOT_FACEBOOK_APP_ID"),
            facebook_app_secret=env("KNOT_FACEBOOK_APP_SECRET"),
        )


@dataclass(frozen=True)
class StripeConfig:
    """Payments through Stripe (issue 11). Without an API key, payments are off: the payment routes answer 501
    code 45, networks that require a guarantee refuse rents (402 code 33), everything else works.

    ``api_base`` points the SDK at another server (a test server such as localstripe); None is Stripe's own.
    """

    api_key: str | None = None
    public_key: str | None = None  # given to the apps (row 6's providers_setup_info), never secret
    webhook_secret: str | None = None  # whsec_...: the Stripe-Signature of the webhook is checked with it
    api_base: str | None = None
    timeout: float = 20.0  # one call to Stripe, connection included; then 502 code 45 (or a job's retry)
    max_network_retries: int = 1  # the SDK's own retries of a failed call (same idempotency key)

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_env(cls) -> StripeConfig:
        env = os.environ.get
        config = cls(
            api_key=env("STRIPE_API_KEY") or None,
            public_key=env("STRIPE_PUBLIC_KEY") or None,
            webhook_secret=env("STRIPE_WEBHOOK_SECRET") or None,
            api_base=(env("STRIPE_API_BASE") or "").rstrip("/") or None,
            timeout=_env_float("KNOT_STRIPE_TIMEOUT", 20.0),
        )
        config.check()
        return config

    def check(self) -> None:
        """A half configuration is refused at start rather than failing on the first rider."""
        if not self.api_key:
            return
        missing = [name for name, value in (("STRIPE_PUBLIC_KEY", self.public_key),
                                            ("STRIPE_WEBHOOK_SECRET", self.webhook_secret)) if not value]
        if missing:
            raise ConfigError(f"STRIPE_API_KEY is set: {' and '.join(missing)} must be set too")
        if self.api_base and not self.api_base.startswith(("http://", "https://")):
            raise ConfigError(f"STRIPE_API_BASE must be an http(s) URL, not {self.api_base!r}")
        if self.timeout <= 0:
            raise ConfigError("KNOT_STRIPE_TIMEOUT must be positive")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    station_port: int = station_wire.DEFAULT_PORT
    database_url: str | None = None
    db_pool_size: int = 20
    # Bounds of every database wait: past them a request answers 503 code 48 instead of hanging.
    db_connect_timeout: float = 5.0
    db_acquire_timeout: float = 10.0
    db_command_timeout: float = 15.0
    smtp_url: str | None = None
    smtp_ca_file: str | None = None  # CA bundle trusted for SMTP TLS, beside the system's
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For is believed
    secret_key: str = ""
    data_dir: Path = Path(".knot-data")
    public_url: str = "http://127.0.0.1:8000"
    mail_from: str = "Knot <no-reply@knot.local>"
    access_token_seconds: int = 3600
    refresh_token_days: int = 60
    email_token_hours: int = 48
    max_body_bytes: int = 1_048_576
    rate_limits: RateLimits = field(default_factory=RateLimits)
    social: SocialConfig = field(default_factory=SocialConfig)
    stripe: StripeConfig = field(default_factory=StripeConfig)
    station_heartbeat_seconds: int = station_wire.DEFAULT_HEARTBEAT_INTERVAL
    station_ping_seconds: float = station_wire.DEFAULT_PING_INTERVAL
    station_call_timeout: float = station_wire.DEFAULT_CALL_TIMEOUT
    # Station gateway hardening (see knot_rt/stations/gateway.py and service.py).
    station_max_connections: int = 20_000  # open sockets, handshakes included; more are closed at once
    station_max_handshakes: int = 512  # sockets not yet authenticated
    station_handshake_seconds: float = 10.0  # to send the upgrade request, then to be authenticated
    station_auth_failures: str = "20/minute"  # failed logins per address (`limits` rate); then 429
    station_secret_check_seconds: float = 15.0  # how often open sockets are checked against rotated secrets
    station_restart_backoff: float = 0.5  # first delay before an actor restart, doubling, capped at 30 s
    station_restart_storm: int = 500  # restarts of all station actors within 5 s that escalate the subtree
    chat_idle_seconds: float = 300.0  # a report's chat actor stops after this long without a message
    subtree_restart_backoff: float = 1.0  # first delay before the root restarts a failed subtree (capped 60 s)
    badge_link_seconds: float = 60.0  # a badge link waits this long at its reader for the badge
    station_offline_maintenance_seconds: float = 900.0  # a station offline this long gets a maintenance opened
    vehicle_idle_seconds: float = 900.0  # a vehicle actor without messages for this long stops
    vehicle_call_timeout: float = vehicle_wire.DEFAULT_CALL_TIMEOUT  # a command to a vehicle's module: 504 after
    vehicle_status_seconds: int = vehicle_wire.DEFAULT_HEARTBEAT_INTERVAL  # the `status` interval told at boot
    rent_unlock_seconds: float = 30.0  # an unlocking rent without the station's `unlocked` this long fails
    free_floating_unlock_metres: float = FREE_FLOATING_UNLOCK_METRES  # unlock distance of a free-floating vehicle
    feed_queue_capacity: int = 256
    feed_retention_hours: float = 24.0
    mail_retry_seconds: float = 5.0
    mail_max_attempts: int = 8
    catalog_refresh_seconds: float = 60.0  # the catalog reads everything again this often (changes made behind it)
    mail_poll_seconds: float = 2.0  # the outbox is drained when a commit wakes the sender, and this often
    # The payments worker (knot_rt/payments/worker.py) and the guarantees' rules for rents.
    payment_worker: bool = True  # run the capture/release jobs in this process (a test may run its own)
    payment_poll_seconds: float = 2.0  # due jobs are looked for when a rent's end wakes the worker, and this often
    payment_lease_seconds: float = 120.0  # a taken job is taken again after this (a crash mid-job); > a call
    payment_retry_seconds: float = 5.0  # first delay after a provider failure, doubling, capped at 15 minutes
    guarantee_margin_hours: float = 36.0  # an unlock takes a hold only if the provider keeps it this much longer
    guarantee_warn_hours: float = 24.0  # a riding rent's hold ending within this: the rider is warned once
    # Several server processes share the database (``knot_rt/cluster``): devices owned through advisory
    # locks, feed events, revocations and catalog changes across processes. Off: one process does it all.
    cluster: bool = False
    # Listening sockets inherited from ``knot-rt serve --workers N`` (``knot_rt/workers.py``): the HTTP port's
    # and the device gateway's, shared by every worker. None: bind ``port`` and ``station_port``.
    http_fd: int | None = None
    gateway_fd: int | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ.get
        settings = cls(
            host=env("KNOT_HOST", "127.0.0.1"),
            port=_env_int("PORT", 8000),
            station_port=_env_int("KNOT_STATION_PORT", station_wire.DEFAULT_PORT),
            database_url=env("DATABASE_URL") or None,
            db_pool_size=_env_int("KNOT_DB_POOL_SIZE", 20),
            db_connect_timeout=_env_float("KNOT_DB_CONNECT_TIMEOUT", 5.0),
            db_acquire_timeout=_env_float("KNOT_DB_ACQUIRE_TIMEOUT", 10.0),
            db_command_timeout=_env_float("KNOT_DB_COMMAND_TIMEOUT", 15.0),
            smtp_url=env("SMTP_URL") or None,
            smtp_ca_file=env("SMTP_CA_FILE") or None,
            trusted_proxies=parse_trusted_proxies(env("KNOT_TRUSTED_PROXIES", "")),
            secret_key=env("KNOT_SECRET_KEY", ""),
            data_dir=Path(env("KNOT_DATA_DIR", ".knot-data")),
            public_url=env("KNOT_PUBLIC_URL", ""),
            mail_from=env("KNOT_MAIL_FROM", "Knot <no-reply@knot.local>"),
            station_max_connections=_env_int("KNOT_STATION_MAX_CONNECTIONS", 20_000),
            station_max_handshakes=_env_int("KNOT_STATION_MAX_HANDSHAKES", 512),
            station_auth_failures=env("KNOT_STATION_AUTH_FAILURES", "20/minute"),
            badge_link_seconds=_env_float("KNOT_BADGE_LINK_SECONDS", 60.0),
            station_offline_maintenance_seconds=_env_float("KNOT_STATION_OFFLINE_MAINTENANCE_SECONDS", 900.0),
            cluster=env("KNOT_CLUSTER", "") not in ("", "0", "false", "no"),
            social=SocialConfig.from_env(),
            stripe=StripeConfig.from_env(),
        )
        settings = replace(settings, **overrides)  # type: ignore[arg-type]
        if not settings.public_url:
            settings = replace(settings, public_url=f"http://{settings.host}:{settings.port}")
        return settings

    def with_secret(self) -> Settings:
        """Fill in the secret key: kept in the data folder so tokens survive a restart.

        Generated once and written atomically (mode 0600); a key shorter than 32 bytes,
        given or found, is refused.
        """
        key, source = self.secret_key, "KNOT_SECRET_KEY"
        if not key:
            path = self.data_dir / "secret_key"
            try:
                key, source = write_private_file(path, secrets.token_urlsafe(48)).strip(), str(path)
            except OSError as exc:
                raise ConfigError(f"cannot write the secret key in {self.data_dir}: {exc.strerror}") from exc
        if len(key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(f"the secret key in {source} is shorter than {MIN_SECRET_KEY_BYTES} bytes")
        return replace(self, secret_key=key)
