"""The retry policy and the retry loop's state, without a network: back-off values, the
deadline check before each wait, and which codes are retried."""

from __future__ import annotations

import grpc
import pytest

from finpredict.client import RETRYABLE_CODES, DeadlineExceededError, InvalidRequestError, RetryPolicy
from finpredict.client._core import Attempts
from finpredict.client.retry import Deadline


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "boom") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_capped_exponential_with_jitter_below_the_base() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0, jitter=0.5)
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert [policy.backoff(n, 0.0) for n in range(1, 7)] == pytest.approx(bases)
    halves = [b / 2 for b in bases]
    assert [policy.backoff(n, 0.999999) for n in range(1, 7)] == pytest.approx(halves, rel=1e-5)
    assert policy.backoff(3, 0.5) == pytest.approx(0.4 * 0.75)


def test_full_jitter_spans_zero_to_the_base() -> None:
    policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=0.2, jitter=1.0)
    assert policy.backoff(5, 0.0) == pytest.approx(0.2)
    assert policy.backoff(5, 0.75) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1},
        {"initial_backoff_s": 3, "max_backoff_s": 2},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_only_unavailable_and_resource_exhausted_are_retryable() -> None:
    assert {c for c in grpc.StatusCode if RetryPolicy.retryable(c)} == set(RETRYABLE_CODES)
    assert set(RETRYABLE_CODES) == {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_attempts_wait_only_while_the_deadline_allows() -> None:
    clock = Clock()
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=0.4, jitter=0.0)
    attempts = Attempts(policy, Deadline(1.0, clock=clock), lambda: 0.0, "rid")
    assert attempts.start() == pytest.approx(1.0)  # the first attempt gets the whole budget
    clock.now += 0.05
    assert attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) == pytest.approx(0.1)
    clock.now += 0.1
    assert attempts.start() == pytest.approx(0.85)  # later attempts get what is left
    clock.now += 0.05
    assert attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) == pytest.approx(0.2)
    clock.now += 0.2 + 0.45  # 0.15 left: the next back-off (0.4) would pass the deadline
    assert attempts.start() == pytest.approx(0.15)
    with pytest.raises(DeadlineExceededError, match="deadline would pass before attempt 4") as err:
        attempts.failed(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"))
    assert err.value.attempts == 3
    assert err.value.request_id == "rid"
    assert "RESOURCE_EXHAUSTED: busy" in err.value.message
    assert isinstance(err.value.__cause__, FakeRpcError)


def test_attempts_refuse_to_start_after_the_deadline() -> None:
    clock = Clock()
    attempts = Attempts(RetryPolicy(), Deadline(0.5, clock=clock), lambda: 0.0, "rid")
    attempts.start()
    clock.now += 0.6
    with pytest.raises(DeadlineExceededError):
        attempts.start()


def test_without_deadline_attempts_are_bounded_by_count() -> None:
    attempts = Attempts(RetryPolicy(max_attempts=2), Deadline(None), lambda: 0.5, "rid")
    assert attempts.start() is None
    assert attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) > 0
    attempts.start()
    with pytest.raises(Exception, match="UNAVAILABLE") as err:
        attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    assert err.value.attempts == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("message", "offset", "field", "feature", "index"),
    [
        (
            'application.features["age"]: 200 is above the maximum 120',
            0,
            'application.features["age"]',
            "age",
            None,
        ),
        ("applications[3].entity_id: required", 500, "applications[503].entity_id", None, 503),
        ("model: required", 0, "model", None, None),
        ("applications: 1001 items exceed the batch limit of 1000", 0, "applications", None, None),
        ("something went wrong", 0, None, None, None),
    ],
)
def test_invalid_request_parses_the_field(
    message: str, offset: int, field: str | None, feature: str | None, index: int | None
) -> None:
    err = InvalidRequestError(grpc.StatusCode.INVALID_ARGUMENT, message, index_offset=offset)
    assert (err.field, err.feature, err.index) == (field, feature, index)
