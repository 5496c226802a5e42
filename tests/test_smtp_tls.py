"""SMTP over TLS verifies the server's certificate (issue 7, "Accounts").

A real SMTP sink with a self-signed certificate for 127.0.0.1, over implicit TLS
(``smtps://``) and STARTTLS (``smtp+starttls://``): the service refuses it (the
mail waits in the outbox with the verification error) unless ``SMTP_CA_FILE``
trusts that certificate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from knot_rt.config import Settings
from tests.support import Harness, SmtpSink, _Collector, _free_port, running, token_in
from tests.test_outbox import outbox_row, register


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "knot test smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_file, key_file


class TlsSmtpSink(SmtpSink):
    """The SMTP sink of ``tests.support``, over implicit TLS or with STARTTLS required."""

    def __init__(self, scheme: str, cert_file: Path, key_file: Path) -> None:
        self._collector = _Collector()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        tls: dict[str, Any] = (
            {"ssl_context": context} if scheme == "smtps" else {"tls_context": context, "require_starttls": True}
        )
        self._scheme = scheme
        self._controller = Controller(
            self._collector, hostname="127.0.0.1", port=_free_port(), loop=asyncio.SelectorEventLoop(), **tls
        )

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._controller.port}"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture(params=["smtps", "smtp+starttls"])
def tls_sink(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> Iterator[TlsSmtpSink]:
    with running(TlsSmtpSink(request.param, *certificate)) as sink:
        yield sink


@pytest.fixture
def trusted() -> bool:
    return False


@pytest.fixture
def settings(settings: Settings, tls_sink: TlsSmtpSink, certificate: tuple[Path, Path], trusted: bool) -> Settings:
    return replace(settings, smtp_url=tls_sink.url, smtp_ca_file=str(certificate[0]) if trusted else None)


async def test_an_untrusted_certificate_is_refused(harness: Harness, tls_sink: TlsSmtpSink) -> None:
    await register(harness)
    failed = await outbox_row(harness, "last_error IS NOT NULL")
    assert "CERTIFICATE_VERIFY_FAILED" in failed["last_error"], failed["last_error"]
    assert failed["sent_at"] is None  # kept for a retry, once the server's certificate is in order
    assert tls_sink.messages() == []


@pytest.mark.parametrize("trusted", [True])
async def test_a_certificate_trusted_by_smtp_ca_file_is_accepted(harness: Harness, tls_sink: TlsSmtpSink) -> None:
    await register(harness)
    [mail] = await tls_sink.wait_for("ada@example.com", timeout=30)
    assert len(token_in(mail)) == 10
    sent = await outbox_row(harness, "sent_at IS NOT NULL")
    assert sent["last_error"] is None
