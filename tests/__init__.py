import os
import time

# When pytest started the tests, for tests/test_fast_tier.py: here, before conftest.py imports torch (2.4 s), in
# pytest's own process; xdist's test processes, and what they start, inherit it.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ.setdefault("TESTS_SESSION_STARTED", str(time.time()))
