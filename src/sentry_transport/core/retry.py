"""Retry policy as a value (network errors only; HTTP errors are never retried).

``RetryPolicy.delay(attempt, first_try, now, rand)`` is pure: the number of seconds to wait
before attempt ``attempt + 1`` (exponential backoff with jitter), or None to give up because
the attempts or the overall deadline are used up. The caller does the sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # retries after the first try
    backoff: float = 0.5  # first delay, doubling each time
    max_backoff: float = 30.0
    deadline: float = 30.0  # seconds after the first try past which nothing is retried
    jitter: float = 0.25  # +/- this fraction of the delay

    def delay(self, attempt: int, first_try: float, now: float, rand: float) -> float | None:
        """``attempt`` tries have failed; ``rand`` is uniform in [0, 1)."""
        if attempt > self.attempts:
            return None
        base: float = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        wait: float = max(0.0, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))
        if now + wait > first_try + self.deadline:
            return None
        return wait
