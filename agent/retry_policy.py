"""The one retry policy: how often, and how patiently, a transient failure is tried again.

Every retry in layerfed (the chain's JSON-RPC calls, the IPFS node's RPC calls, the engine's fetches of
peers' updates) goes through :meth:`RetryPolicy.call`, built on tenacity: a fixed number of attempts,
exponential backoff between them, only the exception types the caller names, and, given a stop event, a
wait that ends the moment the agent is asked to stop (SIGTERM), after which at most one more attempt is
made before the last failure is raised. Retrying is a decision about which failures are transient, so the
caller always names them: a rejected input (:class:`agent.errors.RejectedInputError`) is never among them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

__all__ = ["RetryPolicy"]

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting ``first_delay_seconds``, then ``backoff_factor`` times longer
    after each failure."""

    attempts: int = 4
    first_delay_seconds: float = 0.5
    backoff_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay_seconds < 0 or self.backoff_factor < 1:
            raise ValueError(
                f"a retry policy needs attempts >= 1, a delay >= 0 and a backoff factor >= 1, not {self}"
            )

    def call(
        self,
        operation: Callable[[], _Result],
        *,
        retry_on: type[BaseException] | tuple[type[BaseException], ...],
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        description: str = "",
    ) -> _Result:
        """Run ``operation`` until it returns, raising its last ``retry_on`` failure when the attempts are
        spent or ``stop`` is set; any other exception is raised at once.

        With ``stop`` the waits are ``stop.wait`` (so a stop request ends them early) and ``sleep`` is
        unused; ``sleep`` lets tests run the policy without waiting.
        """
        stop_condition: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if stop is not None:
            stop_condition = stop_condition | tenacity.stop_when_event_set(stop)
        retrying = tenacity.Retrying(
            stop=stop_condition,
            wait=tenacity.wait_exponential(
                multiplier=self.first_delay_seconds, exp_base=self.backoff_factor, min=0, max=float("inf")
            ),
            retry=tenacity.retry_if_exception_type(retry_on),
            sleep=_waiter(stop) if stop is not None else sleep,
            before_sleep=_log_retry(description) if description else None,
            reraise=True,
        )
        return retrying(operation)


def _waiter(stop: threading.Event) -> Callable[[float], None]:
    def wait(seconds: float) -> None:
        stop.wait(seconds)

    return wait


def _log_retry(description: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        logger.info("%s failed (%s), attempt %d; retrying", description, failure, state.attempt_number)

    return log
