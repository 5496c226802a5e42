"""HTTP Basic credentials of a device's upgrade: what a device writes, the gateway reads back."""

from __future__ import annotations

import base64

import pytest

from protocols.credentials import basic_authorization, parse_basic_authorization

LIMIT = 1024


def test_written_header_reads_back() -> None:
    header = basic_authorization(42, "s3cret:with:colons-é")
    assert header == "Basic " + base64.b64encode("42:s3cret:with:colons-é".encode()).decode()
    assert parse_basic_authorization(header, max_length=LIMIT) == ("42", "s3cret:with:colons-é")
    # a vehicle's user is its serial number
    assert parse_basic_authorization(basic_authorization("SN-0001", "x" * 16), max_length=LIMIT) == ("SN-0001", "x" * 16)


def test_scheme_is_case_insensitive_and_padding_space_is_ignored() -> None:
    encoded = base64.b64encode(b"7:abcdefghijklmnop").decode()
    assert parse_basic_authorization(f"bAsIc  {encoded} ", max_length=LIMIT) == ("7", "abcdefghijklmnop")


@pytest.mark.parametrize("header", [
    None,
    "",
    "Basic",
    "Bearer abc",
    "Basic abc",  # not base64
    "Basic " + base64.b64encode(b"no colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:secret").decode(),  # not UTF-8
    "Basic " + base64.b64encode(b"1:secret").decode() + "!",  # a stray character
    "Basic " + "A" * (LIMIT + 4),  # over the bound: not even decoded
])
def test_anything_else_is_none(header: str | None) -> None:
    assert parse_basic_authorization(header, max_length=LIMIT) is None
