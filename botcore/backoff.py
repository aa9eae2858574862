"""How long to wait before trying again: one rule for every retry the bot makes itself.

Exponential with full jitter: the wait grows with each attempt up to a cap, and is drawn at random below
that, so that workers which failed together do not try again together.
"""

from __future__ import annotations

import random


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before attempt `attempt + 1`, after `attempt` (≥ 1) failed ones."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
