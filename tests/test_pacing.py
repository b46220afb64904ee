"""Keeping to the broker's flood limit once it is known (client.pacing): a hand-moved
clock, no sockets."""

from __future__ import annotations

import pytest

from zchat.client.core import FloodRefusal
from zchat.client.pacing import MARGIN_SECONDS, Pacer


def refusal(retry_at: float, rate: float | None = 2.0, burst: int | None = 3) -> FloodRefusal:
    return FloodRefusal("m1", retry_at, rate, burst, "slow down", "a line")


def test_a_pacer_knows_nothing_until_refused() -> None:
    assert Pacer().ready_at() == 0.0


def test_a_pacer_waits_a_token_for_each_request_then_lets_the_burst_refill() -> None:
    pacer = Pacer()
    pacer.learn(refusal(retry_at=10.0))  # one token at 10.0, then 2 a second
    assert pacer.ready_at() == pytest.approx(10.0 + MARGIN_SECONDS)
    pacer.spent(10.0)
    assert pacer.ready_at() == pytest.approx(10.5 + MARGIN_SECONDS)
    pacer.spent(10.5)
    pacer.spent(20.0)  # long after: the bucket was full again (3), two tokens are left
    assert pacer.ready_at() < 20.0
    pacer.spent(20.0)
    pacer.spent(20.0)
    assert pacer.ready_at() == pytest.approx(20.5 + MARGIN_SECONDS)


def test_a_refusal_without_the_limit_only_delays_the_next_request() -> None:
    pacer = Pacer()
    pacer.learn(refusal(retry_at=10.0, rate=None, burst=None))
    assert pacer.ready_at() == 10.0
    pacer.spent(10.0)
    assert pacer.ready_at() == 10.0  # nothing known to keep to
