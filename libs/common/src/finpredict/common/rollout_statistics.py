"""What drove one rollout decision, in one line: the figures an analysis recorded, compact.

A rollout analysis (``finpredict.rollout.v1.Decision``) carries the window's figures
(``metrics``), how many gateway replicas' measurements it merged (``replicas``) and the
statistics' record as JSON (``statistics``: each always-valid sequential test's estimate,
confidence sequence, margin, statistic against its bound and sample sizes; the sample-ratio check; the
training/serving skew with its worst feature; prediction consistency; the label-free estimates;
calibration; the latency tests' stable share over the SLO and whether both variants are over
it). :func:`decision_statistics` turns them into the line ``finpredict rollout status``
and the demo's report show next to each decision. A test that rejected is marked ``REJECTS``,
a failed check ``FAILS``, a hold (both variants over the latency SLO) ``HOLDS``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from finpredict.api.rollout.v1 import rollout_pb2

SEP = "; "


def _f(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _test(t: Mapping[str, Any]) -> str | None:
    """One sequential test (None while it had no data, e.g. a label test before any label)."""
    if t.get("estimate") is None:
        return None
    line = (
        f"{t['metric']} {_f(t['estimate'], '+.4f')} CS [{_f(t.get('lower'), '+.4f')}, "
        f"{_f(t.get('upper'), '+.4f')}] margin {_f(t.get('margin'), 'g')} "
        f"stat {_f(t.get('statistic'), '.2f')}/{_f(t.get('bound'), '.2f')}"
        f" n {t.get('n_canary', 0)}/{t.get('n_stable', 0)}"
    )
    return line + (" REJECTS" if t.get("reject") else "")


def _srm(srm: Mapping[str, Any]) -> str:
    observed = srm.get("observed") or {}
    counts = "/".join(f"{arm} {n}" for arm, n in observed.items())
    verdict = "MISMATCH" if srm.get("mismatch") else "ok"
    return f"SRM {verdict} p {_f(srm.get('p_value'), '.3g')} ({counts})"


def _skew(skew: Mapping[str, Any]) -> str | None:
    worst = skew.get("worst")
    if not worst:
        return None
    return (
        f"skew worst {worst['name']} PSI {_f(worst.get('psi'), '.3f')} "
        f"(stable {_f(worst.get('stable_psi'), '.3f')})" + (" FAILS" if skew.get("skewed") else "")
    )


def _consistency(c: Mapping[str, Any]) -> str:
    return (
        f"scores vs own reference PSI {_f(c.get('canary_psi'), '.3f')} "
        f"(stable {_f(c.get('stable_psi'), '.3f')})" + ("" if c.get("consistent", True) else " FAILS")
    )


def _expected(expected: Mapping[str, Any]) -> str | None:
    canary, stable = expected.get("canary") or {}, expected.get("stable") or {}
    if canary.get("auc") is None and stable.get("auc") is None:
        return None
    return f"expected AUC {_f(canary.get('auc'), '.3f')} vs stable {_f(stable.get('auc'), '.3f')}"


def _calibration(c: Mapping[str, Any]) -> str:
    return (
        f"ECE {_f(c.get('ece'), '.3f')} (lower bound {_f(c.get('ece_lower'), '.3f')}, "
        f"n {c.get('labeled', 0)})" + (" FAILS" if c.get("miscalibrated") else "")
    )


def _latency(latency: Mapping[str, Any], tests: list[Mapping[str, Any]]) -> str | None:
    """Stable's share of single-application calls over the SLO (and a hold), or why the latency
    tests did not judge yet (their lines are left out while they have no estimate)."""
    share = latency.get("stable_share_over_slo")
    if share is None:
        return None
    line = f"stable over the latency SLO {share:.1%}" + (" HOLDS" if latency.get("hold") else "")
    slo = next((t for t in tests if t.get("metric") == "latency_slo"), None)
    if slo is not None and slo.get("estimate") is None:
        line += f" (latency not judged yet: {slo.get('n_canary', 0)} canary single-application calls)"
    return line


def summarize(statistics: Mapping[str, Any], metrics: Mapping[str, float], replicas: int) -> str:
    """The line for an analysis: replicas merged, the window's score drift against stable, then
    the statistics' record (``statistics`` as recorded; empty for other decisions)."""
    parts: list[str] = []
    if replicas:
        parts.append(f"{replicas} replica{'s' if replicas != 1 else ''} merged")
    if "canary_requests" in metrics:
        canary, stable = int(metrics["canary_requests"]), int(metrics.get("stable_requests", 0))
        parts.append(f"window n canary/stable {canary}/{stable}")
    if "score_psi" in metrics:
        parts.append(f"score PSI {metrics['score_psi']:.3f} KL {metrics.get('score_kl', 0.0):.3f}")
    if statistics:
        for t in statistics.get("tests", []):
            line = _test(t)
            if line:
                parts.append(line)
        if statistics.get("srm"):
            parts.append(_srm(statistics["srm"]))
        if statistics.get("skew"):
            line = _skew(statistics["skew"])
            if line:
                parts.append(line)
        if statistics.get("consistency"):
            parts.append(_consistency(statistics["consistency"]))
        line = _expected(statistics.get("expected") or {})
        if line:
            parts.append(line)
        if statistics.get("calibration"):
            parts.append(_calibration(statistics["calibration"]))
        line = _latency(statistics.get("latency") or {}, statistics.get("tests", []))
        if line:
            parts.append(line)
        if statistics.get("alpha") is not None:
            parts.append(f"alpha {statistics['alpha']:g}")
    return SEP.join(parts)


def decision_statistics(decision: rollout_pb2.Decision) -> str:
    """The line of one decision as the rollout API returns it (empty for a decision that was not an
    analysis, e.g. a start or a pause)."""
    doc = json.loads(decision.statistics) if decision.statistics else {}
    return summarize(doc, dict(decision.metrics), int(decision.replicas))
