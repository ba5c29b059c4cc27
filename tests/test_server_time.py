"""How the server words a span of time in its messages (the step-up window, say)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from licet.server.time import duration


@given(st.integers(min_value=1, max_value=10_000))
def test_whole_minutes_read_as_minutes_and_the_rest_as_seconds(n: int) -> None:
    assert duration(60 * n) == (f"{n} minutes" if n != 1 else "1 minute")
    seconds = 60 * n + 1
    assert duration(seconds) == f"{seconds} seconds"


def test_short_windows_are_never_zero_minutes() -> None:
    assert [duration(s) for s in (15, 1, 59)] == ["15 seconds", "1 second", "59 seconds"]
