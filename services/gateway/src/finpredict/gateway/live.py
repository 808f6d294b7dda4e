"""This replica's in-memory view of the rollouts: what the request path routes by and measures into.

The active rollouts come from the shared state (:mod:`finpredict.gateway.state.sync` swaps in a
fresh copy within ``STATE_POLL_S`` of any change; a change this replica stored itself is adopted
at once). Each active rollout has a local :class:`~finpredict.gateway.state.windows.StepWindow`
for its current window number: the requests this replica routed, published by the sync for the
leader to merge. The inputs of the scored requests wait here (references, about
``MAX_PENDING_ROWS`` per variant between two countings) until :meth:`LiveRollouts.count_inputs`
counts them on their version's reference profile (:mod:`finpredict.gateway.inputs`) in a worker
thread, before each publication and analysis. Delayed labels come in through
:meth:`LiveRollouts.record_outcomes` (the predictions the monitor matched to outcomes this replica
forwarded) and go to the arm that served their prediction, by the rollout or experiment id the
prediction was logged with: the open window of that rollout's variant, or that running
experiment's arm (:mod:`finpredict.gateway.experiment_stats`, whose per-arm counts are published
with the windows). Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.gateway import metrics
from finpredict.gateway.experiment_stats import LiveExperiments
from finpredict.gateway.inputs import PendingInputs, ProfileColumns, count_pending
from finpredict.gateway.policies import Experiment
from finpredict.gateway.rollout import ACTIVE, Rollout
from finpredict.gateway.routing import Split
from finpredict.gateway.state.windows import StepWindow

# Scored requests whose inputs wait to be counted, per rollout and variant: a batch is kept whole
# while fewer wait, later ones until the next counting are left out of the input counts (not of the
# other measurements). Counting costs about 50 us per row of a 46-column profile (measured), so
# with the sync counting every STATE_POLL_S (0.25 s) a variant counts at most about 1,000-2,000
# rows a second: the model checks need a sample of hundreds to thousands, not every request.
MAX_PENDING_ROWS = 250


class LiveRollouts:
    """Active rollouts by model, their splits and this replica's window of each."""

    def __init__(self, *, canary_weight_factor: float = 1.0) -> None:
        """``canary_weight_factor``: a test hook (the gateway's ``test_hook_canary_weight_factor``):
        the router sends this multiple of each rollout's canary weight to the canary, a broken
        split the sample-ratio check must halt. 1.0 (the default) routes as configured."""
        self._canary_weight_factor = canary_weight_factor
        self._active: dict[str, Rollout] = {}
        self._splits: dict[str, tuple[tuple[Any, ...], Split]] = {}
        self._windows: dict[str, StepWindow] = {}  # by rollout id
        self._pending: dict[tuple[str, int, str], PendingInputs] = {}  # (rollout, window, variant)
        self.experiments = LiveExperiments()  # this replica's per-arm counts of experiments

    # ----- the request path --------------------------------------------------------------------

    def active(self, model: str) -> Rollout | None:
        """The model's rollout while it still routes traffic to the canary."""
        return self._active.get(model)

    def split(self, rollout: Rollout) -> Split:
        key = (rollout.state.value, rollout.step_index, rollout.id)
        cached = self._splits.get(rollout.model)
        if cached is None or cached[0] != key:
            factor = self._canary_weight_factor
            cached = (key, rollout.split(None if factor == 1.0 else min(100.0, rollout.weight * factor)))
            self._splits[rollout.model] = cached
        return cached[1]

    def record_batch(
        self,
        rollout_id: str,
        variant: str,
        n: int,
        *,
        ok: bool,
        latency_ms: float,
        scores: Sequence[float] = (),
        threshold: float | None = None,
        inputs: Sequence[Mapping[str, types_pb2.FeatureValue]] = (),
        columns: ProfileColumns | None = None,
        call_size: int | None = None,
    ) -> None:
        """Records ``n`` requests of ``variant`` from one call of ``call_size`` applications (default
        ``n``; :meth:`~finpredict.gateway.analysis.VariantWindow.record_batch`); ``inputs``: the
        feature maps of the scored ones (as many as ``scores``), counted later on their version's
        profile (``columns``; None: the version has no reference profile)."""
        window = self._windows.get(rollout_id)
        if window is None:
            return
        window.side(variant).record_batch(
            n, ok=ok, latency_ms=latency_ms, scores=scores, threshold=threshold, call_size=call_size
        )
        window.changed = True
        if columns is None or not ok or not inputs:
            return
        key = (rollout_id, window.window, variant)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = PendingInputs(rollout_id, window.window, variant, columns)
        if len(pending.rows) < MAX_PENDING_ROWS:
            pending.rows.extend(inputs)
            pending.scores.extend(scores)
        else:
            metrics.ROLLOUT_INPUTS_UNCOUNTED_TOTAL.labels(variant).inc(len(inputs))

    def record_outcomes(
        self,
        labelled: Sequence[monitor_pb2.LabelledPrediction],
        experiments: Mapping[str, Experiment],
    ) -> None:
        """Counts delayed labels (predictions the monitor just matched to outcomes) for the arm that
        served each prediction, by the ids it was logged with: into the open window of its rollout
        (``rollout_id``, while active) on its variant, or into its experiment's arm
        (``experiment_id``, one of the running ``experiments``, by model). A label of a prediction
        served outside an active rollout or a running experiment (before it started, by another
        rollout of the same version, or logged without the ids) is not counted anywhere."""
        running = {e.id: e for e in experiments.values()}
        groups: dict[tuple[str, str, str, float], tuple[list[float], list[bool]]] = {}
        for row in labelled:
            key = (row.rollout_id, row.experiment_id, row.variant, row.threshold)
            scores, defaulted = groups.setdefault(key, ([], []))
            scores.append(row.score)
            defaulted.append(row.defaulted)
        for (rollout_id, experiment_id, variant, threshold), (scores, defaulted) in groups.items():
            counted = False
            window = self._windows.get(rollout_id) if rollout_id else None
            if window is not None and variant in ("stable", "canary"):
                window.side(variant).record_outcomes(scores, defaulted, threshold)
                window.changed = counted = True
            experiment = running.get(experiment_id) if experiment_id else None
            if experiment is not None:
                counted = (
                    self.experiments.record_outcomes(experiment, variant, scores, defaulted, threshold)
                    or counted
                )
            metrics.OUTCOMES_ANALYSED_TOTAL.labels("counted" if counted else "ignored").inc(len(scores))

    async def count_inputs(self) -> None:
        """Counts the inputs recorded since the last call into their windows (the conversion and the
        counting run in a worker thread; a window that closed meanwhile drops its share)."""
        pending, self._pending = list(self._pending.values()), {}
        if not pending:
            return
        for p, counted in await asyncio.to_thread(count_pending, pending):
            window = self._windows.get(p.rollout_id)
            if window is not None and window.window == p.window:
                window.side(p.variant).add_inputs(counted)
                window.changed = True

    def window(self, rollout_id: str) -> StepWindow | None:
        return self._windows.get(rollout_id)

    # ----- keeping it current ------------------------------------------------------------------

    def models(self) -> set[str]:
        return set(self._active)

    def rollouts(self) -> list[Rollout]:
        return list(self._active.values())

    def apply(self, active: Sequence[Rollout], ended: Sequence[Rollout] = ()) -> None:
        """Swaps in the active rollouts of a snapshot (``ended``: those that ended since the last)."""
        for rollout in ended:
            self._windows.pop(rollout.id, None)
            self._export(rollout)
        self._active = {r.model: r for r in active}
        for gone in set(self._windows) - {r.id for r in active}:
            del self._windows[gone]
        for rollout in active:
            self._open_window(rollout)
            self._export(rollout)

    def adopt(self, rollout: Rollout) -> None:
        """A change this replica stored: routing follows it at once."""
        if rollout.state in ACTIVE:
            self._active[rollout.model] = rollout
            self._open_window(rollout)
        else:
            if self._active.get(rollout.model, rollout).id == rollout.id:
                self._active.pop(rollout.model, None)
            self._windows.pop(rollout.id, None)
        self._export(rollout)

    def _open_window(self, rollout: Rollout) -> None:
        window = self._windows.get(rollout.id)
        if window is None or window.window != rollout.window:
            self._windows[rollout.id] = StepWindow(rollout.window)

    def unpublished(self) -> list[tuple[str, int, str]]:
        """``(rollout id, window, measurements as JSON)`` of every window recorded into since the
        last call (marked published)."""
        out = []
        for rollout_id, window in self._windows.items():
            if window.changed:
                out.append((rollout_id, window.window, window.to_json()))
                window.changed = False
        return out + self.experiments.unpublished()

    def mark_unpublished(self, rollout_ids: Sequence[str]) -> None:
        """The publication of these failed: publish them again next time."""
        for rollout_id in rollout_ids:
            if (window := self._windows.get(rollout_id)) is not None:
                window.changed = True
        self.experiments.mark_unpublished(rollout_ids)

    @staticmethod
    def _export(rollout: Rollout) -> None:
        metrics.ROLLOUT_WEIGHT_PERCENT.labels(rollout.model).set(rollout.weight)
        metrics.ROLLOUT_STEP.labels(rollout.model).set(rollout.step_index)
