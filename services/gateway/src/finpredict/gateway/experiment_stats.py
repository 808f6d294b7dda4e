"""A/B experiments' statistics: every replica's per-arm counts since the start, and what they say.

Each replica counts what it routes to each arm of a running experiment (:class:`LiveExperiments`:
requests, errors, scores on the statistics' grid, approvals) and the delayed labels of those
arms' predictions: the monitor's answer to ``RecordOutcomes`` names the score and threshold each
matched outcome's prediction was served with and the experiment id and arm the gateway logged it
with, and the label goes to that arm (two arms of one version each get their own; a prediction
served outside the experiment counts in none). The counts are published with the rollouts'
windows (``window_stats``, keyed by the experiment's id, window :data:`EXPERIMENT_WINDOW`, this
process as the source) and kept after the experiment stops. Any replica asked
(``GetExperiment``) sums every source's row with its own live counts and judges them with
:func:`finpredict.gateway.stats.compare_arms`: each arm against the first (the control), per-arm
rates with always-valid confidence intervals, the effects with theirs, the sample-ratio check and
a stopping recommendation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from finpredict.gateway.policies import Experiment
from finpredict.gateway.stats import ArmCounts, StatLimits, Stratum, compare_arms
from finpredict.gateway.stats.sequential import json_safe

EXPERIMENT_WINDOW = 0  # an experiment has one window: its counts since the start


def counts_to_json(arms: Mapping[str, ArmCounts]) -> str:
    return json.dumps({"arms": {name: c.to_dict() for name, c in arms.items()}})


def counts_from_json(text: str) -> dict[str, ArmCounts]:
    return {name: ArmCounts.from_dict(c) for name, c in json.loads(text)["arms"].items()}


class LiveExperiments:
    """This replica's per-arm counts of each experiment it served, since it started serving it."""

    def __init__(self) -> None:
        self._arms: dict[str, dict[str, ArmCounts]] = {}  # experiment id -> arm -> counts
        self._changed: set[str] = set()

    def _arm(self, experiment_id: str, arm: str) -> ArmCounts:
        self._changed.add(experiment_id)
        return self._arms.setdefault(experiment_id, {}).setdefault(arm, ArmCounts())

    def record(
        self,
        experiment_id: str,
        arm: str,
        n: int,
        *,
        ok: bool,
        scores: Sequence[float] = (),
        threshold: float | None = None,
    ) -> None:
        """``n`` requests routed to ``arm``; ``scores`` of the ones that succeeded, approved below
        ``threshold``."""
        self._arm(experiment_id, arm).add_requests(
            requests=n,
            errors=0 if ok else n,
            scores=scores if ok and threshold is not None else (),
            threshold=threshold if threshold is not None else 0.0,
        )

    def record_outcomes(
        self,
        experiment: Experiment,
        arm: str,
        scores: Sequence[float],
        defaulted: Sequence[bool],
        threshold: float,
    ) -> bool:
        """Delayed labels of predictions the experiment's ``arm`` served: counted for it; False
        (nothing counted) when the experiment has no such arm."""
        if all(a.name != arm for a in experiment.arms):
            return False
        self._arm(experiment.id, arm).add_outcomes(scores, defaulted, threshold)
        return True

    def counts(self, experiment_id: str) -> dict[str, ArmCounts]:
        """This replica's live counts of an experiment (empty when it served none)."""
        return dict(self._arms.get(experiment_id, {}))

    def unpublished(self) -> list[tuple[str, int, str]]:
        """``(experiment id, EXPERIMENT_WINDOW, counts as JSON)`` of each experiment counted into
        since the last call (marked published)."""
        out = [(i, EXPERIMENT_WINDOW, counts_to_json(self._arms[i])) for i in sorted(self._changed)]
        self._changed.clear()
        return out

    def mark_unpublished(self, ids: Sequence[str]) -> None:
        """The publication of these failed: publish them again next time."""
        self._changed.update(i for i in ids if i in self._arms)


def merged_counts(
    published: Sequence[tuple[str, str, str]], own: Mapping[str, ArmCounts], source: str, replica: str
) -> tuple[dict[str, ArmCounts], int]:
    """Every other source's published counts (``(replica, source, JSON)`` rows of
    :meth:`~finpredict.gateway.state.windows.WindowStore.read_rows`) plus this source's live
    ``own``, and how many replicas contributed requests or labels."""
    total: dict[str, ArmCounts] = {}
    replicas: set[str] = set()
    rows = [(who, counts_from_json(text)) for who, src, text in published if src != source]
    for who, arms in [*rows, (replica, dict(own))]:
        for name, counts in arms.items():
            total.setdefault(name, ArmCounts()).merge(counts)
            if counts.requests or counts.labeled:
                replicas.add(who)
    return total, len(replicas)


def experiment_statistics(
    experiment: Experiment, arms: Mapping[str, ArmCounts], limits: StatLimits | None = None
) -> dict[str, Any]:
    """The record ``GetExperiment`` returns: for each arm after the first, its comparison with the
    first (:meth:`finpredict.gateway.stats.Experiment.to_dict`: both arms' figures with always-valid
    intervals, the effects, the sample-ratio check over every arm, the recommendation)."""
    stratum = Stratum(
        {a.name: a.weight / 100.0 for a in experiment.arms},
        {a.name: arms.get(a.name, ArmCounts()) for a in experiment.arms},
    )
    control = experiment.arms[0].name
    comparisons = [compare_arms([stratum], control, arm.name, limits=limits) for arm in experiment.arms[1:]]
    doc = {
        "control": control,
        "versions": {a.name: a.version for a in experiment.arms},
        "comparisons": [c.to_dict() for c in comparisons],
    }
    return dict(json_safe(doc))
