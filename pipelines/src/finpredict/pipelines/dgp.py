"""The data-generating process (DGP) of the synthetic business-lending book.

Every application is driven by two latent factors that are never observed directly:

* ``q`` ~ N(0, 1): credit quality (higher is better);
* ``s`` ~ N(0, 1): business size.

The 45 input features are noisy, correlated functions of ``q``, ``s``, the sector and the
region (see :func:`_features`); some are missing by design (unsecured loans have no collateral,
service firms no inventory turnover, thin files no bureau score, owner income is sometimes not
declared).

The default label comes from a known nonlinear process of *observed* features plus an
unobserved shock (see :func:`default_logit`)::

    logit = -4.9 + 1.1 * ( 1.25*softplus(1.3 - dscr) + 1.6*util^2 + 0.45*min(delinq_12m, 4)
            + 0.8*[leverage > 0.85] + sector_risk + 0.55*[years_in_business < 2]
            - 0.0065*(bureau_score - 680)  (0 when missing, plus 0.3)
            + 0.7*util*[delinq_12m > 0] + 0.5*bankruptcies + 0.25*tax_liens
            - 2.2*net_profit_margin + 0.35*[revenue_growth < -0.1] + 0.004*(receivable_days - 45)
          ) + N(0, 0.6)
    default ~ Bernoulli(sigmoid(logit))

which gives a default rate of about 9% and a Bayes AUC of about 0.87, so a good gradient-boosted
model reaches an AUC-ROC of about 0.85.

The protected attribute ``protected_group`` ("A"/"B", e.g. a demographic of the owner) is *not*
a model feature and does not enter the label; it is mildly correlated with ``region`` (a
realistic, weak proxy: P(B) ranges from 0.34 to 0.46 across regions), so a good model stays
within the demographic-parity gate.

Named drift scenarios (:data:`SCENARIOS`) reuse the same process:

* ``recession``: the latent credit quality of the whole book falls by 0.4 standard
  deviations, revenue and owner income fall (x0.8, x0.85), credit utilisation rises (+0.12),
  delinquency rates rise (x1.6), revenue growth falls (-0.1); labels follow the features: the
  default rate roughly doubles (about 8.5% -> 19%), so the score distribution moves too (score
  KL against the calm book about 0.16, far above the 0.1 alert; a calm hour of 200 scores
  stays below 0.06);
* ``new_segment``: a wave of young technology and professional-services firms (under two years
  in business, small, fast-growing, thin bureau files);
* ``unit_change``: a silent upstream change reports ``annual_revenue`` and ``cash_balance`` in
  thousands of USD; labels are unchanged and every value stays within the schema's ranges, so
  only drift monitoring can catch it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from finpredict.features import CREDIT_SCHEMA, LEGAL_FORMS, LOAN_PURPOSES, REGIONS, SECTORS

FloatArr = npt.NDArray[np.float64]

SCENARIOS: tuple[str, ...] = ("none", "recession", "new_segment", "unit_change")

LABEL = "default"
PROTECTED = "protected_group"
TIMESTAMP = "application_ts"
ID = "application_id"

_SECTOR_P = np.array([0.16, 0.12, 0.11, 0.09, 0.1, 0.08, 0.08, 0.06, 0.12, 0.08])
_SECTOR_RISK = np.array([0.15, 0.0, 0.35, 0.45, -0.25, 0.1, 0.2, 0.25, -0.3, 0.0])
_SECTOR_SIZE = np.array([-0.1, 0.4, 0.1, -0.3, 0.2, 0.1, 0.2, 0.0, -0.2, 0.3])
_SERVICE_SECTORS = {"hospitality", "healthcare", "technology", "professional_services"}
_REGION_P = np.array([0.2, 0.2, 0.18, 0.18, 0.16, 0.08])
_REGION_Q = np.array([0.05, -0.08, 0.0, 0.05, 0.0, -0.06])
_REGION_P_B = np.array([0.36, 0.46, 0.4, 0.34, 0.42, 0.44])


def _softplus(x: FloatArr) -> FloatArr:
    return np.logaddexp(0.0, x)


def _sigmoid(x: FloatArr) -> FloatArr:
    return 1.0 / (1.0 + np.exp(-x))


def default_logit(df: pl.DataFrame) -> FloatArr:
    """The true log-odds of default of each row (the known nonlinear process; no noise term)."""

    def col(name: str) -> FloatArr:
        return df[name].cast(pl.Float64).to_numpy().astype(np.float64)

    util = np.clip(col("credit_utilization"), 0, 1.5)
    d12 = col("delinquencies_12m")
    bureau = col("business_bureau_score")
    bureau_term = np.where(np.isnan(bureau), 0.3, -0.0065 * (np.nan_to_num(bureau, nan=680.0) - 680.0))
    sector_idx = df["sector"].replace_strict({s: i for i, s in enumerate(SECTORS)}, return_dtype=pl.Int64)
    sector_risk = _SECTOR_RISK[sector_idx.to_numpy()]
    logit: FloatArr = -4.9 + 1.1 * (
        1.25 * _softplus(1.3 - col("debt_service_coverage"))
        + 1.6 * util**2
        + 0.45 * np.minimum(d12, 4)
        + 0.8 * (col("leverage_ratio") > 0.85)
        + sector_risk
        + 0.55 * (col("years_in_business") < 2)
        + bureau_term
        + 0.7 * util * (d12 > 0)
        + 0.5 * col("bankruptcies")
        + 0.25 * col("tax_liens")
        - 2.2 * col("net_profit_margin")
        + 0.35 * (col("revenue_growth") < -0.1)
        + 0.004 * (col("receivable_days") - 45.0)
    )
    return logit


def generate(
    n_rows: int,
    seed: int = 0,
    scenario: str = "none",
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    days: int = 730,
    missing_scale: float = 1.0,
) -> pl.DataFrame:
    """Generates ``n_rows`` loan applications (45 features, label, protected attribute, timestamp)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    if n_rows < 1:
        raise ValueError("n_rows must be >= 1")
    rng = np.random.default_rng(seed)
    n = n_rows
    segment = scenario == "new_segment"

    sector_p = _SECTOR_P.copy()
    if segment:
        sector_p = np.full(len(SECTORS), 0.02)
        sector_p[SECTORS.index("technology")] = 0.55
        sector_p[SECTORS.index("professional_services")] = 0.29
    sector_i = rng.choice(len(SECTORS), size=n, p=sector_p / sector_p.sum())
    region_i = rng.choice(len(REGIONS), size=n, p=_REGION_P)
    protected = np.where(rng.random(n) < _REGION_P_B[region_i], "B", "A")

    q = rng.standard_normal(n) + _REGION_Q[region_i]
    s = 0.9 * rng.standard_normal(n) + _SECTOR_SIZE[sector_i]
    if segment:
        s = s - 0.8
    if scenario == "recession":
        q = q - 0.4  # credit quality deteriorates across the book

    def noise(sd: float) -> FloatArr:
        return rng.standard_normal(n) * sd

    years = rng.gamma(2.2, 4.5, n) * np.exp(0.15 * q + 0.2 * s)
    if segment:
        years = rng.uniform(0.1, 2.0, n)
    years = np.clip(years, 0.1, 150)
    revenue = np.exp(13.0 + 1.2 * s + 0.2 * q + noise(0.35))
    owner_income = np.exp(11.2 + 0.3 * s + 0.2 * q + noise(0.4))
    npm = np.clip(0.06 + 0.06 * q + noise(0.06), -0.9, 0.9)
    ebitda = np.clip(npm + 0.05 + noise(0.03), -0.95, 0.95)
    assets = revenue * np.exp(-0.3 + noise(0.5))
    leverage = np.clip(0.55 - 0.14 * q + noise(0.15), 0.01, 5.0)
    liabilities = assets * leverage
    dti = np.clip(liabilities / revenue, 0, 45)
    dscr = np.clip(np.exp(0.45 + 0.35 * q + noise(0.25)), 0.05, 45)
    current = np.clip(np.exp(0.3 + 0.25 * q + noise(0.3)), 0.05, 45)
    quick = current * rng.uniform(0.5, 0.95, n)
    credit_limit = revenue * np.exp(-2.0 + noise(0.5))
    util = np.clip(_sigmoid(-0.7 - 0.85 * q + noise(0.6)) * 1.1, 0, 1.6)
    revolving = credit_limit * util
    loan = np.clip(revenue * np.exp(-1.6 + noise(0.6)), 1000, None)
    term = rng.choice(np.array([12, 24, 36, 48, 60, 84, 120]), size=n).astype(np.float64)
    rate = np.clip(0.075 - 0.015 * q + noise(0.01), 0.02, 0.6)
    secured = rng.random(n) < 0.72
    collateral = np.where(secured, loan * np.exp(0.2 + noise(0.4)), np.nan)
    ltv = np.where(secured, np.clip(loan / collateral, 0, 90), np.nan)
    d12_rate = np.exp(-1.9 - 0.9 * q)
    d24_extra = np.exp(-1.7 - 0.8 * q)
    if scenario == "recession":
        revenue *= 0.8
        owner_income *= 0.85
        util = np.clip(util + 0.12, 0, 1.6)
        revolving = credit_limit * util
        d12_rate *= 1.6
        d24_extra *= 1.6
    d12 = np.minimum(rng.poisson(d12_rate), 90).astype(np.float64)
    d24 = np.minimum(d12 + rng.poisson(d24_extra), 190).astype(np.float64)
    dpd = np.where(d24 > 0, np.clip(np.round(rng.gamma(1.5, 20.0, n) * (1 + 0.3 * d24)), 1, 3000), 0.0)
    inquiries = np.minimum(rng.poisson(np.exp(0.3 - 0.3 * q)), 90).astype(np.float64)
    open_acc = np.minimum(rng.poisson(4 + 2 * np.maximum(s, 0)), 400).astype(np.float64)
    trade_lines = open_acc + rng.poisson(3, n)
    experience = np.clip(np.round(years + rng.gamma(2.0, 3.0, n)), 0, 80)
    tenure = np.clip(np.round(np.minimum(years * 12, rng.gamma(1.5, 24.0, n))), 0, 1200)
    employees = np.clip(np.round(revenue / np.exp(11.5 + noise(0.4))), 1, 1e6)
    emp_growth = np.clip(0.03 + 0.05 * q + noise(0.1), -0.95, 9)
    rev_growth = np.clip(0.04 + 0.08 * q + noise(0.15), -0.95, 9)
    if segment:
        rev_growth = np.clip(rev_growth + 0.5, -0.95, 9)
        emp_growth = np.clip(emp_growth + 0.4, -0.95, 9)
    if scenario == "recession":
        rev_growth = np.clip(rev_growth - 0.1, -0.95, 9)
    cash = revenue * np.exp(-2.5 + 0.4 * q + noise(0.6))
    recv_days = np.clip(45 - 8 * q + noise(15), 0, 700)
    pay_days = np.clip(40 + noise(15), 0, 700)
    sector_names = np.array(SECTORS)[sector_i]
    service = np.isin(sector_names, list(_SERVICE_SECTORS))
    inv_turn = np.where(service, np.nan, np.clip(np.exp(1.7 + 0.2 * q + noise(0.5)), 0.01, 400))
    bureau = np.clip(np.round(680 + 55 * q + noise(30)), 300, 850)
    thin_file = rng.random(n) < (0.45 if segment else 0.06 * missing_scale)
    bureau = np.where(thin_file, np.nan, bureau)
    owner_score = np.clip(np.round(700 + 40 * q + noise(40)), 300, 850)
    pay_hist = np.clip(100 * _sigmoid(1.5 + 0.9 * q + noise(0.5)), 0, 100)
    bankruptcies = np.minimum(rng.poisson(np.exp(-4.0 - 0.8 * q)), 15).astype(np.float64)
    liens = np.minimum(rng.poisson(np.exp(-3.0 - 0.7 * q)), 40).astype(np.float64)
    guarantor = (rng.random(n) < 0.4).astype(np.float64)
    owner_income = np.where(rng.random(n) < 0.04 * missing_scale, np.nan, owner_income)
    legal = rng.choice(len(LEGAL_FORMS), size=n, p=[0.3, 0.1, 0.4, 0.2])
    purpose = rng.choice(len(LOAN_PURPOSES), size=n, p=[0.35, 0.25, 0.2, 0.12, 0.08])

    seconds = rng.uniform(0, days * 86400.0, n)
    ts = np.datetime64(start.replace(tzinfo=None), "us") + (seconds * 1e6).astype("timedelta64[us]")

    cols: dict[str, npt.NDArray[Any]] = {
        "annual_revenue": revenue,
        "owner_annual_income": owner_income,
        "net_profit_margin": npm,
        "ebitda_margin": ebitda,
        "total_assets": assets,
        "total_liabilities": liabilities,
        "debt_to_income": dti,
        "debt_service_coverage": dscr,
        "current_ratio": current,
        "quick_ratio": quick,
        "leverage_ratio": leverage,
        "credit_utilization": util,
        "revolving_balance": revolving,
        "credit_limit": credit_limit,
        "loan_amount": loan,
        "loan_term_months": term,
        "interest_rate": rate,
        "collateral_value": collateral,
        "loan_to_value": ltv,
        "delinquencies_12m": d12,
        "delinquencies_24m": d24,
        "max_days_past_due": dpd,
        "credit_inquiries_6m": inquiries,
        "open_accounts": open_acc,
        "trade_lines": trade_lines.astype(np.float64),
        "years_in_business": years,
        "owner_experience_years": experience,
        "customer_tenure_months": tenure,
        "employees": employees,
        "employee_growth": emp_growth,
        "revenue_growth": rev_growth,
        "cash_balance": cash,
        "receivable_days": recv_days,
        "payable_days": pay_days,
        "inventory_turnover": inv_turn,
        "business_bureau_score": bureau,
        "owner_credit_score": owner_score,
        "payment_history_score": pay_hist,
        "bankruptcies": bankruptcies,
        "tax_liens": liens,
        "has_guarantor": guarantor,
        "sector": sector_names,
        "region": np.array(REGIONS)[region_i],
        "legal_form": np.array(LEGAL_FORMS)[legal],
        "loan_purpose": np.array(LOAN_PURPOSES)[purpose],
    }
    ids = pl.format("app-{}-{}", pl.lit(seed), pl.int_range(n, dtype=pl.Int64).cast(pl.String).str.zfill(8))
    series: list[pl.Series] = [pl.select(ids.alias(ID)).to_series()]  # app-<seed>-<8-digit row>
    series.append(pl.Series(TIMESTAMP, ts).dt.replace_time_zone("UTC"))
    for spec in CREDIT_SCHEMA.features:
        values = cols[spec.name]
        if spec.kind == "categorical":
            series.append(pl.Series(spec.name, values, dtype=pl.String))
        elif spec.kind == "integer":
            series.append(pl.Series(spec.name, values, dtype=pl.Float64, nan_to_null=True).cast(pl.Int64))
        else:
            series.append(pl.Series(spec.name, values, dtype=pl.Float64, nan_to_null=True))
    df = pl.DataFrame(series)

    logit = default_logit(df) + noise(0.6)
    label = (rng.random(n) < _sigmoid(logit)).astype(np.int8)
    df = df.with_columns(
        pl.Series(PROTECTED, protected, dtype=pl.String), pl.Series(LABEL, label, dtype=pl.Int8)
    )
    if scenario == "unit_change":
        df = df.with_columns(pl.col("annual_revenue") / 1000.0, pl.col("cash_balance") / 1000.0)
    return df
