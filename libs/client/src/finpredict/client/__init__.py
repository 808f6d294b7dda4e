"""finpredict client SDK: typed scoring calls to the gateway.

>>> from finpredict.client import ScoringClient
>>> with ScoringClient("127.0.0.1:50051", token="...") as client:  # doctest: +SKIP
...     result = client.score("credit-default", "biz-42", {"utilisation": 0.4, "industry": "retail"})

:class:`ScoringClient` blocks, :class:`AsyncScoringClient` is its asyncio twin. Both also record
what became of scored applications (``record_outcomes([Outcome(request_id, defaulted=True)])``, a
``writer`` token), which the monitor measures live accuracy with, and analysts' feedback on
decisions (``record_feedback([Feedback(request_id, Verdict.OVERRIDDEN, corrected_label=True)])``),
whose corrected labels train the next model. Both retry
``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED`` with capped exponential back-off and jitter inside one
overall deadline, re-using the request id, and raise typed :class:`ScoringError` subclasses.
"""

from finpredict.client.aio import AsyncScoringClient
from finpredict.client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ScoringError,
    UnavailableError,
)
from finpredict.client.retry import NO_RETRY, RETRYABLE_CODES, RetryPolicy
from finpredict.client.sync import ScoringClient
from finpredict.client.types import (
    Application,
    Decision,
    FeatureInput,
    Feedback,
    FeedbackSummary,
    Outcome,
    OutcomeSummary,
    ReasonCode,
    ScoreResult,
    Variant,
    Verdict,
)

__all__ = [
    "NO_RETRY",
    "RETRYABLE_CODES",
    "Application",
    "AsyncScoringClient",
    "AuthenticationError",
    "DeadlineExceededError",
    "Decision",
    "FeatureInput",
    "Feedback",
    "FeedbackSummary",
    "InvalidRequestError",
    "ModelNotFoundError",
    "Outcome",
    "OutcomeSummary",
    "PermissionDeniedError",
    "ReasonCode",
    "RetryPolicy",
    "ScoreResult",
    "ScoringClient",
    "ScoringError",
    "UnavailableError",
    "Variant",
    "Verdict",
]
