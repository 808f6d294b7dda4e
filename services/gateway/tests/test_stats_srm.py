"""Sample-ratio mismatch: Pearson's chi-square and the always-valid decision."""

from __future__ import annotations

import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from finpredict.gateway.stats.counts import ArmCounts, Stratum
from finpredict.gateway.stats.srm import chi2_sf, sample_ratio_mismatch


@pytest.mark.parametrize(
    ("x", "df"), [(0.5, 1), (3.84, 1), (10.0, 2), (7.0, 3), (25.0, 4), (40.0, 7), (200.0, 1)]
)
def test_chi2_survival_matches_scipy(x: float, df: int) -> None:
    assert chi2_sf(x, df) == pytest.approx(float(sps.chi2.sf(x, df)), rel=1e-9, abs=1e-300)


def _stratum(weight: float, canary: int, stable: int) -> Stratum:
    return Stratum.canary(weight, ArmCounts(requests=stable), ArmCounts(requests=canary))


@pytest.mark.parametrize(
    ("strata", "mismatch"),
    [
        ([_stratum(0.01, 100, 9900)], False),
        ([_stratum(0.01, 200, 9800)], True),  # a router sending 2 % instead of 1 %
        ([_stratum(0.01, 110, 9890)], False),  # within noise
        ([_stratum(0.01, 100, 9900), _stratum(0.25, 2500, 7500)], False),  # each step its own split
        ([_stratum(0.01, 100, 9900), _stratum(0.25, 1000, 9000)], True),
        ([_stratum(0.0, 5, 9995)], True),  # traffic to an arm configured to get none
    ],
)
def test_mismatch(strata: list[Stratum], mismatch: bool) -> None:
    result = sample_ratio_mismatch(strata)
    assert result.mismatch is mismatch
    if mismatch:
        assert result.p_value < 0.001
        assert "expected" in result.describe()


def test_pools_expected_counts_over_strata() -> None:
    result = sample_ratio_mismatch([_stratum(0.01, 100, 9900), _stratum(0.25, 2500, 7500)])
    assert result.expected == pytest.approx({"canary": 2600.0, "stable": 17400.0})
    assert result.observed == {"canary": 2600, "stable": 17400}
    assert result.chi2 == pytest.approx(0.0)
    assert result.p_value == pytest.approx(1.0)


def test_three_arms() -> None:
    arms = {n: ArmCounts(requests=c) for n, c in (("a", 3400), ("b", 3300), ("c", 3300))}
    ok = sample_ratio_mismatch([Stratum({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, arms)])
    assert not ok.mismatch
    assert ok.df == 2
    arms["c"] = ArmCounts(requests=2500)
    assert sample_ratio_mismatch([Stratum({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, arms)]).mismatch
