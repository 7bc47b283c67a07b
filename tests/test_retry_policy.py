"""The one retry policy: attempts, backoff, which failures are retried, and a stop request ending waits."""

from __future__ import annotations

import threading
import time

import pytest

from agent.errors import ContentMismatchError, ContentStoreError, NetworkError
from agent.retry_policy import RetryPolicy


class Flaky:
    """Fails with ``failure`` the first ``failures`` times, then returns the number of calls."""

    def __init__(self, failures: int, failure: Exception) -> None:
        self.failures = failures
        self.failure = failure
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.failure
        return self.calls


def test_transient_failures_are_retried_with_exponential_backoff() -> None:
    waits: list[float] = []
    flaky = Flaky(2, ContentStoreError("node down"))
    policy = RetryPolicy(attempts=4, first_delay_seconds=0.5, backoff_factor=2.0)
    assert policy.call(flaky, retry_on=NetworkError, sleep=waits.append) == 3
    assert waits == [0.5, 1.0]


def test_the_last_failure_is_raised_when_the_attempts_are_spent() -> None:
    waits: list[float] = []
    flaky = Flaky(10, ContentStoreError("node down"))
    with pytest.raises(ContentStoreError, match="node down"):
        RetryPolicy(attempts=3, first_delay_seconds=0.1).call(
            flaky, retry_on=NetworkError, sleep=waits.append
        )
    assert flaky.calls == 3 and waits == [0.1, 0.2]


def test_a_permanent_failure_is_never_retried() -> None:
    flaky = Flaky(10, ContentMismatchError("wrong bytes"))
    with pytest.raises(ContentMismatchError):
        RetryPolicy(attempts=5).call(flaky, retry_on=NetworkError, sleep=lambda _seconds: None)
    assert flaky.calls == 1


def test_a_stop_request_ends_the_wait_and_the_retries() -> None:
    """A long backoff must not keep an agent that systemd asked to stop (SIGTERM) waiting."""
    stop = threading.Event()
    flaky = Flaky(10, ContentStoreError("node down"))
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ContentStoreError):
        RetryPolicy(attempts=10, first_delay_seconds=60.0).call(flaky, retry_on=NetworkError, stop=stop)
    assert time.monotonic() - started < 30.0  # far below one 60 s wait, however loaded the machine
    assert flaky.calls <= 2


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
