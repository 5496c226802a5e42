"""Back-off of a simulated device: a delay that doubles per failure, up to a cap.

One policy serves the two waits of a device (``device.py``): the pause before
reconnecting after a failed attempt, jittered (a fleet that lost its backend
together must not come back in lockstep), and the pause before sending again an
event the backend answered ``InternalError``, not jittered (it is one device's
own retry, and a fixed schedule reads better in a log). The exponent stops at
30, so a long outage never overflows a float.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

DEFAULT_BACKOFF_MIN: Final = 0.5  # seconds
DEFAULT_BACKOFF_MAX: Final = 30.0


@dataclass(frozen=True, slots=True)
class Backoff:
    minimum: float = DEFAULT_BACKOFF_MIN
    maximum: float = DEFAULT_BACKOFF_MAX

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum:
            raise ValueError("need 0 < backoff_min <= backoff_max")

    def delay(self, failures: int) -> float:
        """``minimum * 2 ** failures``, at most ``maximum``."""
        return min(self.maximum, self.minimum * 2 ** min(failures, 30))

    def jittered(self, failures: int) -> float:
        """A random delay in the upper half of :meth:`delay`."""
        ceiling = self.delay(failures)
        return random.uniform(ceiling / 2, ceiling)
