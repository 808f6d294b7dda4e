"""The documented data-generating process and its drift scenarios."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from finpredict.features import CREDIT_SCHEMA
from finpredict.pipelines import dgp

N = 20_000


@pytest.fixture(scope="module")
def base() -> pl.DataFrame:
    return dgp.generate(N, seed=1)


def test_columns_types_and_determinism(base: pl.DataFrame) -> None:
    assert base.columns == [dgp.ID, dgp.TIMESTAMP, *CREDIT_SCHEMA.input_names, dgp.PROTECTED, dgp.LABEL]
    assert base[dgp.TIMESTAMP].dtype == pl.Datetime("us", "UTC")
    assert base.equals(dgp.generate(N, seed=1))
    assert not base.equals(dgp.generate(N, seed=2))


def test_realistic_label_rate_signal_and_missing_values(base: pl.DataFrame) -> None:
    y = base[dgp.LABEL].to_numpy()
    assert 0.06 < y.mean() < 0.13
    # the known process separates the classes about as well as documented (Bayes AUC ~0.87)
    assert 0.84 < roc_auc_score(y, dgp.default_logit(base)) < 0.9
    for name in ("collateral_value", "inventory_turnover", "business_bureau_score", "owner_annual_income"):
        rate = base[name].null_count() / N
        assert 0.0 < rate <= CREDIT_SCHEMA.spec(name).max_null_rate
    # correlations with credit quality
    corr = np.corrcoef(base["credit_utilization"].to_numpy(), base["payment_history_score"].to_numpy())[0, 1]
    assert corr < -0.3


def test_protected_attribute_is_not_a_feature_and_barely_related_to_default(base: pl.DataFrame) -> None:
    assert dgp.PROTECTED not in CREDIT_SCHEMA.input_names
    rates = base.group_by(dgp.PROTECTED).agg(pl.col(dgp.LABEL).cast(pl.Float64).mean())[dgp.LABEL]
    assert rates.max() - rates.min() < 0.02
    # a mild proxy exists: the share of group B differs by region
    by_region = base.group_by("region").agg((pl.col(dgp.PROTECTED) == "B").mean().alias("b"))["b"]
    assert 0.05 < by_region.max() - by_region.min() < 0.2


def test_recession_shifts_income_utilisation_and_defaults(base: pl.DataFrame) -> None:
    rec = dgp.generate(N, seed=1, scenario="recession")
    assert rec["annual_revenue"].median() < 0.85 * base["annual_revenue"].median()
    assert rec["credit_utilization"].mean() > base["credit_utilization"].mean() + 0.08
    assert rec["delinquencies_12m"].mean() > 1.3 * base["delinquencies_12m"].mean()
    assert rec[dgp.LABEL].mean() > base[dgp.LABEL].mean() + 0.02


def test_new_segment_is_young_tech_firms(base: pl.DataFrame) -> None:
    seg = dgp.generate(N, seed=1, scenario="new_segment")
    assert (seg["sector"] == "technology").mean() > 0.45
    assert seg["years_in_business"].max() <= 2.0
    assert seg["business_bureau_score"].null_count() / N > 0.3


def test_unit_change_is_silent(base: pl.DataFrame) -> None:
    unit = dgp.generate(N, seed=1, scenario="unit_change")
    np.testing.assert_allclose(unit["annual_revenue"].to_numpy() * 1000, base["annual_revenue"].to_numpy())
    assert unit[dgp.LABEL].equals(base[dgp.LABEL])
    assert unit.drop("annual_revenue", "cash_balance").equals(base.drop("annual_revenue", "cash_balance"))


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'boom'"):
        dgp.generate(10, scenario="boom")
