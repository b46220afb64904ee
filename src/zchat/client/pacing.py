"""Keeping a sender within the broker's flood limit, once the broker has said what it is.

The broker drops a session's requests past its token bucket (``burst`` at once, then
``rate`` a second) and tells the sender once, with when the next one gets through and
the limit (core.FloodRefusal). A sender that says one line at a time and waits for each
(``zchat send``, a piped ``zchat join``) keeps a copy of that bucket from then on and
waits for a token before each request, so it is not refused again and again.

The copy is never ahead of the broker's: requests reach the broker after they leave
here, so its bucket has refilled at least as long as this one thinks.
"""

from __future__ import annotations

from zchat.client.core import FloodRefusal

MARGIN_SECONDS = 0.02  # the broker's clock and ours: wait this much longer


class Pacer:
    """A copy of the broker's token bucket for this session, from its last refusal."""

    def __init__(self) -> None:
        self._rate: float | None = None
        self._burst = 1
        self._empty_at = 0.0  # monotonic: when the bucket held (or will hold) no token

    def learn(self, refusal: FloodRefusal) -> None:
        """The broker refused a request: at ``refusal.retry_at`` it has one token again.
        A refusal without the limit (an older broker) only delays the next request."""
        if refusal.rate:
            self._rate, self._burst = refusal.rate, refusal.burst or 1
            self._empty_at = refusal.retry_at - 1.0 / refusal.rate
        else:
            self._rate, self._empty_at = None, refusal.retry_at

    def ready_at(self) -> float:
        """When the next request may go (monotonic); in the past once it may."""
        if self._rate is None:
            return self._empty_at
        return self._empty_at + 1.0 / self._rate + MARGIN_SECONDS

    def spent(self, now: float) -> None:
        """A request went out at ``now``: one token less."""
        if self._rate is not None:
            full_at_most = now - self._burst / self._rate  # a bucket holds at most `burst`
            self._empty_at = max(self._empty_at, full_at_most) + 1.0 / self._rate
