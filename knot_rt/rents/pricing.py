"""What a rent costs, and what pays it: the network's tariff, then the rider's wallet.

The tariff (per network, in its currency): an unlock fee, plus a price per
started minute of billed time (``time_start`` to ``billing_time_stop``, the
station's time of the return). Wallet credit (from discounts) in the same
currency pays first; what is left (``amount_due``) is what the payments part
charges. Amounts are ``Decimal`` with three places, as the columns are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENTS = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class Tariff:
    currency: str
    unlock_fee: Decimal
    price_per_minute: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    currency: str
    billed_seconds: int
    minutes: int
    price: Decimal
    paid_by_wallet: Decimal
    amount_due: Decimal


def billed_minutes(seconds: float) -> int:
    """Started minutes: 0 s is 0, 1 s to 60 s is 1, 61 s is 2."""
    return max(0, math.ceil(seconds / 60))


def price_of(tariff: Tariff, billed_seconds: float, wallet: Decimal) -> Price:
    minutes = billed_minutes(billed_seconds)
    price = (tariff.unlock_fee + tariff.price_per_minute * minutes).quantize(CENTS, ROUND_HALF_UP)
    paid = min(max(wallet, Decimal(0)), price).quantize(CENTS, ROUND_HALF_UP)
    return Price(
        currency=tariff.currency, billed_seconds=max(0, int(billed_seconds)), minutes=minutes, price=price,
        paid_by_wallet=paid, amount_due=price - paid,
    )
