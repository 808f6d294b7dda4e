"""Always-valid sequential tests: the normal-mixture SPRT and its confidence sequence.

Every comparison in this package reduces to the same form. Over strata ``k`` (the rollout's
steps: the split is fixed within a step), an estimate ``d_k`` of the effect ``D`` (canary minus
stable) has (estimated) variance ``s_k^2``; with information ``I_k = 1 / s_k^2``:

    S = sum_k I_k d_k,   V = sum_k I_k,   D_hat = S / V.

``S - D V`` behaves like a Brownian motion in the "intrinsic time" ``V`` (exactly for
sub-Gaussian increments, asymptotically for estimated variances: Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas 2021, "Time-uniform central limit theory and asymptotic confidence
sequences"). Mixing the likelihood ratio ``exp(theta (S - D0 V) - theta^2 V / 2)`` over
``theta ~ N(0, tau^2)`` (Robbins 1970; the mSPRT of Johari, Pekelis and Walsh 2017, "Peeking
at A/B tests") gives the test martingale

    M(D0) = sqrt(rho / (V + rho)) * exp((S - D0 V)^2 / (2 (V + rho))),   rho = 1 / tau^2,

and Ville's inequality, ``P(sup_t M_t >= 1/alpha) <= alpha``, makes rejecting ``D = D0`` when
``M(D0) >= 1/alpha`` valid at every look, however often one looks. Inverting it gives the
confidence sequence (Howard, Ramdas, McAuliffe and Sekhon 2021, eq. (14), two-sided normal
mixture):

    D_hat +- r(V) / V,   r(V) = sqrt((V + rho) * log((V + rho) / (rho * alpha^2))).

``tau`` is the scale of effects the test is tuned for (the width is smallest near
``V ~ 1 / tau^2``, i.e. where an effect of size ``tau`` becomes visible); any ``tau`` keeps the
guarantee. ``p = min(1, 1 / M(D0))`` is an always-valid p-value at this look.

The ``fixed`` boundary, ``z_{1 - alpha/2} sqrt(V)``, is the naive fixed-sample test re-run at
every look: it is here as the baseline whose error rate grows with the number of looks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

Boundary = Literal["mixture", "fixed"]
# Which way is worse for the canary: a higher value, a lower value, or a change either way.
Worse = Literal["higher", "lower", "either"]


def json_safe(doc: Any) -> Any:
    """``doc`` with every non-finite float (NaN, an unbounded interval end) replaced by None,
    recursively, so that it serialises to strict JSON."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: json_safe(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [json_safe(v) for v in doc]
    return doc


@dataclass(frozen=True)
class Evidence:
    """``S = sum I_k d_k`` and ``V = sum I_k`` over strata (see the module docstring)."""

    s: float = 0.0
    v: float = 0.0

    @staticmethod
    def of(estimates: Iterable[tuple[float, float]]) -> Evidence:
        """Evidence from ``(estimate, variance)`` per stratum; a stratum whose variance is not a
        positive finite number (too few rows) adds nothing."""
        s = v = 0.0
        for d, var in estimates:
            if math.isfinite(d) and math.isfinite(var) and var > 0:
                s += d / var
                v += 1.0 / var
        return Evidence(s, v)

    @property
    def estimate(self) -> float:
        """The inverse-variance weighted effect ``S / V`` (NaN without information)."""
        return self.s / self.v if self.v > 0 else math.nan


def radius(v: float, alpha: float, rho: float, boundary: Boundary = "mixture") -> float:
    """The boundary on ``|S - D0 V|`` at information ``v``: the normal mixture's
    ``sqrt((v + rho) log((v + rho) / (rho alpha^2)))`` or the fixed ``z_{1-alpha/2} sqrt(v)``."""
    if boundary == "fixed":
        return NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(v)
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2)))


def confidence_sequence(
    evidence: Evidence, alpha: float, tau: float, boundary: Boundary = "mixture"
) -> tuple[float, float]:
    """The ``1 - alpha`` confidence sequence ``S/V +- r(V)/V`` at this look ((-inf, inf) without data)."""
    if evidence.v <= 0:
        return -math.inf, math.inf
    half = radius(evidence.v, alpha, 1.0 / tau**2, boundary) / evidence.v
    return evidence.estimate - half, evidence.estimate + half


def log_mixture_lr(centered: float, v: float, rho: float) -> float:
    """``log M`` for ``centered = S - D0 V``: ``log(rho / (v + rho)) / 2 + centered^2 / (2 (v + rho))``."""
    return 0.5 * math.log(rho / (v + rho)) + centered**2 / (2 * (v + rho))


@dataclass(frozen=True)
class TestDecision:
    """One sequential comparison at one look, with everything that drove it.

    ``estimate``, ``lower`` and ``upper``: the effect (canary minus stable, or B minus A) and its
    always-valid ``1 - alpha_spent`` confidence sequence. ``reject``: the sequence lies wholly on
    the worse side of ``margin`` (for ``either``: outside ``[-margin, margin]``). ``statistic``:
    ``(S - D0 V) / sqrt(V)`` at the margin nearest the estimate; ``bound``: the boundary it is
    compared with, on the same scale. ``p_value``: always-valid, for "not worse than the margin".
    ``alpha_spent``: this test's share of the rollout's alpha; a mixture SPRT spends its whole
    share over an unbounded number of looks, so it is the same at every look (the ``fixed``
    baseline spends it again at each look). ``tau``: the mixing scale.
    """

    __test__ = False  # not a pytest test class

    metric: str
    reject: bool
    estimate: float
    lower: float
    upper: float
    margin: float
    worse: Worse
    statistic: float
    bound: float
    p_value: float
    alpha_spent: float
    tau: float
    n_stable: int
    n_canary: int
    method: str

    @property
    def informative(self) -> bool:
        """Whether the test had any data (a finite confidence sequence)."""
        return math.isfinite(self.lower) and math.isfinite(self.upper)

    def describe(self) -> str:
        """One line for a reason or a status table."""
        return (
            f"{self.metric}: {self.estimate:+.4f} [{self.lower:+.4f}, {self.upper:+.4f}] "
            f"(margin {self.margin:g}, {self.worse} is worse, alpha {self.alpha_spent:.4g}, "
            f"p {self.p_value:.3g}, n {self.n_canary}/{self.n_stable})"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(json_safe(asdict(self)))


def decide(
    metric: str,
    evidence: Evidence,
    *,
    margin: float,
    worse: Worse,
    alpha: float,
    tau: float,
    n_stable: int,
    n_canary: int,
    method: str,
    boundary: Boundary = "mixture",
) -> TestDecision:
    """Tests "the canary is not worse than ``margin``" on ``evidence`` (see the module docstring)."""
    rho = 1.0 / tau**2
    s, v = evidence.s, evidence.v
    if v <= 0:
        nan = math.nan
        return TestDecision(
            metric,
            False,
            nan,
            -math.inf,
            math.inf,
            margin,
            worse,
            nan,
            nan,
            1.0,
            alpha,
            tau,
            n_stable,
            n_canary,
            method,
        )
    r = radius(v, alpha, rho, boundary)
    est = s / v
    lower, upper = est - r / v, est + r / v
    high = lower > margin
    low = upper < -margin
    reject = {"higher": high, "lower": low, "either": high or low}[worse]
    # The null nearest the estimate on the worse side(s): D0 = +margin or -margin.
    toward_high = worse == "higher" or (worse == "either" and est >= 0)
    d0 = margin if toward_high else -margin
    centered = s - d0 * v
    on_worse_side = centered > 0 if toward_high else centered < 0
    if boundary == "fixed":
        z = abs(centered) / math.sqrt(v)
        p_two = 2 * (1 - NormalDist().cdf(z))
        p = p_two if on_worse_side else 1.0
    else:
        p = min(1.0, math.exp(-log_mixture_lr(centered, v, rho))) if on_worse_side else 1.0
    return TestDecision(
        metric,
        reject,
        est,
        lower,
        upper,
        margin,
        worse,
        centered / math.sqrt(v),
        r / math.sqrt(v),
        p,
        alpha,
        tau,
        n_stable,
        n_canary,
        method,
    )
