"""The feature schema: names, types, order, allowed ranges, nullability and category sets.

A :class:`FeatureSchema` is data (it round-trips through a plain dict / JSON / YAML), so the
exact schema a model was trained with travels in the model's manifest and the server rebuilds
the same transforms from it. :data:`CREDIT_SCHEMA` is the built-in schema of the synthetic
business-lending book (45 input features).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FeatureKind = Literal["numeric", "integer", "categorical"]
DerivedOp = Literal["ratio", "log1p"]

_KINDS: tuple[str, ...] = ("numeric", "integer", "categorical")
_OPS: tuple[str, ...] = ("ratio", "log1p")


class SchemaError(ValueError):
    """A schema (or a record checked against it) is invalid; the message names the feature."""


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature."""

    name: str
    kind: FeatureKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    description: str = ""
    max_null_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "nullable": self.nullable}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        else:
            out["min"] = self.min
            out["max"] = self.max
        out["max_null_rate"] = self.max_null_rate
        out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        name = str(d.get("name", ""))
        if not name:
            raise SchemaError(f"feature without a name: {dict(d)!r}")
        kind = str(d.get("type", ""))
        if kind not in _KINDS:
            raise SchemaError(f"feature {name!r}: type must be one of {_KINDS}, got {kind!r}")
        cats = tuple(str(c) for c in d.get("categories") or ())
        if kind == "categorical" and not cats:
            raise SchemaError(f"feature {name!r}: a categorical feature needs a non-empty 'categories'")
        if len(set(cats)) != len(cats):
            raise SchemaError(f"feature {name!r}: duplicate categories")
        lo = d.get("min")
        hi = d.get("max")
        lo_f = None if lo is None else float(lo)
        hi_f = None if hi is None else float(hi)
        if lo_f is not None and hi_f is not None and lo_f > hi_f:
            raise SchemaError(f"feature {name!r}: min {lo_f} > max {hi_f}")
        nullable = bool(d.get("nullable", False))
        rate = float(d.get("max_null_rate", 1.0 if nullable else 0.0))
        if not 0.0 <= rate <= 1.0:
            raise SchemaError(f"feature {name!r}: max_null_rate must be in [0, 1]")
        return cls(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            nullable=nullable,
            min=lo_f,
            max=hi_f,
            categories=cats,
            description=str(d.get("description", "")),
            max_null_rate=rate if nullable else 0.0,
        )


@dataclass(frozen=True)
class DerivedFeature:
    """A model feature computed from input features (``ratio``: a / b, ``log1p``: log(1 + max(a, 0)))."""

    name: str
    op: DerivedOp
    inputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DerivedFeature:
        name = str(d.get("name", ""))
        op = str(d.get("op", ""))
        if op not in _OPS:
            raise SchemaError(f"derived feature {name!r}: op must be one of {_OPS}, got {op!r}")
        inputs = tuple(str(x) for x in d.get("inputs") or ())
        need = 2 if op == "ratio" else 1
        if len(inputs) != need:
            raise SchemaError(f"derived feature {name!r}: op {op!r} takes {need} inputs, got {len(inputs)}")
        return cls(name=name, op=op, inputs=inputs)  # type: ignore[arg-type]


def reason_code(index: int) -> str:
    """The adverse-action reason code of the model feature at ``index`` (``R01`` is the first), so
    a reason always has the same code for a given feature schema."""
    return f"R{index + 1:02d}"


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered input features plus the derived features; together they define the model input."""

    features: tuple[FeatureSpec, ...]
    derived: tuple[DerivedFeature, ...] = ()
    version: int = 1
    _by_name: dict[str, FeatureSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"duplicate feature names: {dup}")
        if not names:
            raise SchemaError("a feature schema needs at least one feature")
        by_name = {f.name: f for f in self.features}
        for d in self.derived:
            if d.name in by_name:
                raise SchemaError(f"derived feature {d.name!r} clashes with an input feature")
            for i in d.inputs:
                spec = by_name.get(i)
                if spec is None:
                    raise SchemaError(f"derived feature {d.name!r}: unknown input {i!r}")
                if spec.kind == "categorical":
                    raise SchemaError(f"derived feature {d.name!r}: input {i!r} is categorical")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def input_names(self) -> list[str]:
        """Input feature names, in request/schema order."""
        return [f.name for f in self.features]

    @property
    def model_feature_names(self) -> list[str]:
        """Columns of the model input matrix, in order: inputs, then derived features."""
        return self.input_names + [d.name for d in self.derived]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    def reason_descriptions(self) -> dict[str, str]:
        """What each model feature is, for adverse-action reason texts: an input's description, a
        derived feature's formula over its inputs."""
        out = {f.name: f.description for f in self.features}
        for d in self.derived:
            inputs = " / ".join(d.inputs) if d.op == "ratio" else f"log(1 + {d.inputs[0]})"
            out[d.name] = f"{d.name} ({inputs})"
        return out

    def reason_catalogue(self) -> list[tuple[str, str, str]]:
        """Every reason code a model on this schema can give, in code order: (code, model feature,
        what the feature is)."""
        what = self.reason_descriptions()
        return [(reason_code(i), n, what.get(n) or n) for i, n in enumerate(self.model_feature_names)]

    def spec(self, name: str) -> FeatureSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"unknown feature {name!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "features": [f.to_dict() for f in self.features],
            "derived": [d.to_dict() for d in self.derived],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSchema:
        feats = d.get("features")
        if not isinstance(feats, Sequence) or isinstance(feats, str | bytes):
            raise SchemaError("schema: 'features' must be a list")
        return cls(
            features=tuple(FeatureSpec.from_dict(f) for f in feats),
            derived=tuple(DerivedFeature.from_dict(x) for x in d.get("derived") or ()),
            version=int(d.get("version", 1)),
        )

    def check_record(self, record: Mapping[str, object], where: str = "record") -> None:
        """Raises :class:`SchemaError` naming the feature and rule a request record breaks."""
        unknown = sorted(set(record) - set(self._by_name))
        if unknown:
            raise SchemaError(f"{where}: unknown feature(s) {unknown}")
        for spec in self.features:
            value = record.get(spec.name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if not spec.nullable:
                    raise SchemaError(f"{where}: feature {spec.name!r} is missing and not nullable")
                continue
            if spec.kind == "categorical":
                if not isinstance(value, str) or value not in spec.categories:
                    raise SchemaError(
                        f"{where}: feature {spec.name!r} = {value!r} is not one of {list(spec.categories)}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SchemaError(f"{where}: feature {spec.name!r} must be a number, got {value!r}")
            v = float(value)
            if math.isinf(v):
                raise SchemaError(f"{where}: feature {spec.name!r} is infinite")
            if spec.kind == "integer" and not v.is_integer():
                raise SchemaError(f"{where}: feature {spec.name!r} must be an integer, got {value!r}")
            if spec.min is not None and v < spec.min:
                raise SchemaError(f"{where}: feature {spec.name!r} = {v} is below the minimum {spec.min}")
            if spec.max is not None and v > spec.max:
                raise SchemaError(f"{where}: feature {spec.name!r} = {v} is above the maximum {spec.max}")


def _n(
    name: str,
    lo: float | None,
    hi: float | None,
    desc: str,
    *,
    null: float = 0.0,
    integer: bool = False,
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        kind="integer" if integer else "numeric",
        nullable=null > 0,
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        description=desc,
        max_null_rate=null,
    )


def _c(name: str, cats: Sequence[str], desc: str) -> FeatureSpec:
    return FeatureSpec(name=name, kind="categorical", categories=tuple(cats), description=desc)


SECTORS: tuple[str, ...] = (
    "retail",
    "manufacturing",
    "construction",
    "hospitality",
    "healthcare",
    "technology",
    "transport",
    "agriculture",
    "professional_services",
    "wholesale",
)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central", "islands")
LEGAL_FORMS: tuple[str, ...] = ("sole_proprietorship", "partnership", "llc", "corporation")
LOAN_PURPOSES: tuple[str, ...] = ("working_capital", "equipment", "expansion", "refinance", "real_estate")

# Null-rate ceilings are the validation expectations (the generator's rates sit well below them).
CREDIT_SCHEMA = FeatureSchema(
    features=(
        _n("annual_revenue", 0, 1e10, "Annual revenue of the business (USD)"),
        _n("owner_annual_income", 0, 1e8, "Annual personal income of the principal owner (USD)", null=0.10),
        _n("net_profit_margin", -1, 1, "Net profit / revenue"),
        _n("ebitda_margin", -1, 1, "EBITDA / revenue"),
        _n("total_assets", 0, 1e11, "Total assets on the balance sheet (USD)"),
        _n("total_liabilities", 0, 1e11, "Total liabilities on the balance sheet (USD)"),
        _n("debt_to_income", 0, 50, "Total liabilities / annual revenue"),
        _n("debt_service_coverage", 0, 50, "Debt service coverage ratio (cash flow / debt service)"),
        _n("current_ratio", 0, 50, "Current assets / current liabilities"),
        _n("quick_ratio", 0, 50, "Liquid assets / current liabilities"),
        _n("leverage_ratio", 0, 10, "Total liabilities / total assets"),
        _n("credit_utilization", 0, 2, "Revolving balance / credit limit"),
        _n("revolving_balance", 0, 1e10, "Outstanding revolving balance (USD)"),
        _n("credit_limit", 0, 1e10, "Total revolving credit limit (USD)"),
        _n("loan_amount", 0, 1e10, "Requested loan amount (USD)"),
        _n("loan_term_months", 1, 360, "Requested term (months)", integer=True),
        _n("interest_rate", 0, 1, "Offered annual interest rate"),
        _n("collateral_value", 0, 1e11, "Pledged collateral value (USD); missing when unsecured", null=0.5),
        _n("loan_to_value", 0, 100, "Loan amount / collateral value; missing when unsecured", null=0.5),
        _n("delinquencies_12m", 0, 100, "Delinquent payments in the last 12 months", integer=True),
        _n("delinquencies_24m", 0, 200, "Delinquent payments in the last 24 months", integer=True),
        _n("max_days_past_due", 0, 3650, "Worst days-past-due in the last 24 months", integer=True),
        _n("credit_inquiries_6m", 0, 100, "Hard credit inquiries in the last 6 months", integer=True),
        _n("open_accounts", 0, 500, "Open credit accounts", integer=True),
        _n("trade_lines", 0, 1000, "Trade lines on the bureau file", integer=True),
        _n("years_in_business", 0, 200, "Years since incorporation"),
        _n(
            "owner_experience_years",
            0,
            80,
            "Industry experience of the principal owner (years)",
            integer=True,
        ),
        _n("customer_tenure_months", 0, 1200, "Months as a customer of the lender", integer=True),
        _n("employees", 0, 1e6, "Number of employees", integer=True),
        _n("employee_growth", -1, 10, "Year-on-year growth of headcount"),
        _n("revenue_growth", -1, 10, "Year-on-year growth of revenue"),
        _n("cash_balance", 0, 1e10, "Cash and equivalents (USD)"),
        _n("receivable_days", 0, 730, "Days sales outstanding"),
        _n("payable_days", 0, 730, "Days payables outstanding"),
        _n(
            "inventory_turnover",
            0,
            500,
            "Cost of goods sold / inventory; missing for service firms",
            null=0.6,
        ),
        _n("business_bureau_score", 300, 850, "Commercial bureau score", null=0.15),
        _n("owner_credit_score", 300, 850, "Personal credit score of the principal owner"),
        _n("payment_history_score", 0, 100, "On-time payment score (0-100)"),
        _n("bankruptcies", 0, 20, "Past bankruptcies of the business or owner", integer=True),
        _n("tax_liens", 0, 50, "Open tax liens", integer=True),
        _n("has_guarantor", 0, 1, "1 when a personal guarantee is pledged", integer=True),
        _c("sector", SECTORS, "Industry sector"),
        _c("region", REGIONS, "Region of the head office"),
        _c("legal_form", LEGAL_FORMS, "Legal form of the business"),
        _c("loan_purpose", LOAN_PURPOSES, "Declared purpose of the loan"),
    ),
    derived=(
        DerivedFeature("loan_to_revenue", "ratio", ("loan_amount", "annual_revenue")),
        DerivedFeature("cash_to_liabilities", "ratio", ("cash_balance", "total_liabilities")),
        DerivedFeature("log_annual_revenue", "log1p", ("annual_revenue",)),
    ),
)
