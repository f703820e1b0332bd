"""The fast tier's minute: `pytest -m "not slow"`, the tests a fork runs after every change, in at most 60 s on
the 2-core VM (issue 29). This test is handed out last (tests/conftest.py) and reads the time since pytest started;
it measures only a session that is that whole tier, and is skipped in any other."""

import os
import time

import pytest

LIMIT_SECONDS = 60


@pytest.mark.xfail(
    reason="the fast tier took 133 s on the 2-core VM (2026-12-07; limit 60 s): see the note of issue 29"
)
def test_the_fast_tier_takes_at_most_a_minute(request):
    config = request.config
    narrowed = [
        config.getoption(name, None) for name in ("keyword", "ignore", "ignore_glob", "deselect", "lf", "stepwise")
    ]
    if (
        config.option.markexpr != "not slow"
        or any(narrowed)
        or config.args_source != pytest.Config.ArgsSource.TESTPATHS
    ):
        pytest.skip('measures the whole fast tier only: pytest -m "not slow", without paths, -k, --ignore, ...')
    took = time.time() - float(os.environ["TESTS_SESSION_STARTED"])  # at least: the other process may be at work
    assert took <= LIMIT_SECONDS, (
        f"the fast tier took {took:.0f} s so far (limit {LIMIT_SECONDS} s, {os.cpu_count()} cores)"
    )
