"""The main job end to end: a shortened ``finpredict demo`` story on the same code path
(``finpredict.demo.story``), on a stack of its own (its own run dir, free ports, its own Ray via
the model server, its own DVC cache and remote), so it never meets a developer's ``task up``.

The story runs once for the module, shortened (:mod:`finpredict.testkit.demo`); each test checks one
outcome of it: v2 promoted by the rollout controller, the broken candidate rolled back for the
training/serving skew of debt_service_coverage, the feature-drift alert on the right simulated
day, v3 registered by the retraining trigger with the alert in its lineage, put into a canary
by the platform (the model's promotion policy hands it off) and promoted to 100 % by the
controller, the report, and a stack stopped cleanly at the end.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.demo.platform import MODEL
from finpredict.demo.story import StoryResult
from finpredict.stack.launcher import Stack
from finpredict.testkit.demo import SHIFT_DAY, STEPS, own_stack, run_short_story

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[StoryResult, Stack, Path]:
    tmp = tmp_path_factory.mktemp("demo")
    st = own_stack(tmp)
    return run_short_story(st, tmp), st, tmp


def test_v2_is_promoted_by_the_rollout_controller(story: tuple[StoryResult, Stack, Path]) -> None:
    result, _, _ = story
    v1, v2 = result.versions["v1"], result.versions["v2"]
    rollout = result.rollouts["v2"]
    assert rollout.state == rollout_pb2.ROLLOUT_STATE_PROMOTED
    assert (rollout.stable_version, rollout.candidate_version) == (v1, v2)
    assert list(rollout.steps) == list(STEPS)
    advanced = [d.step_index for d in rollout.decisions if d.verdict == "advance"]
    assert advanced == list(range(len(STEPS) - 1)), [(d.verdict, d.reason) for d in rollout.decisions]
    assert result.production["v2"] == v2
    assert result.promotion_actor == "rollout-controller"  # the gateway got its registry token
    assert result.commit_to_production_s is not None
    assert result.commit_to_production_s > 0


def test_the_broken_candidate_is_rolled_back_naming_the_skewed_feature(
    story: tuple[StoryResult, Stack, Path],
) -> None:
    result, _, _ = story
    rollout = result.rollouts["broken"]
    assert rollout.candidate_version == result.versions["broken"]
    assert rollout.state == rollout_pb2.ROLLOUT_STATE_ROLLED_BACK
    last = rollout.decisions[-1]
    assert last.verdict == "rollback"
    assert last.reason.startswith("training/serving skew in debt_service_coverage"), last.reason
    assert result.production["broken"] == result.versions["v2"]  # a rollback leaves the aliases alone
    assert result.time_to_rollback_s is not None
    assert 0 < result.time_to_rollback_s < 120


def test_the_drift_alert_fires_on_the_third_day_of_the_recession(
    story: tuple[StoryResult, Stack, Path],
) -> None:
    result, stack, _ = story
    # nothing copied the profile into the monitor: it fetched it from the registry (checked
    # against the registry's sha256, which it cached beside it)
    cached = stack.data / "monitor" / "profiles" / "credit-default"
    assert (cached / f"{result.versions['v2']}.sha256").exists()
    assert result.shift_time is not None
    assert result.replay_start is not None
    assert result.shift_time == result.replay_start + timedelta(days=SHIFT_DAY)
    psi = [a for a in result.alerts if a.rule == "feature_psi_3d"]
    assert psi, [(a.rule, a.features) for a in result.alerts]
    assert all(a.model.version == result.versions["v2"] for a in psi)
    assert all(a.state == monitor_pb2.ALERT_STATE_FIRING for a in psi)
    first = min(a.started_at.ToDatetime(tzinfo=UTC) for a in psi)
    # The third consecutive daily window above PSI 0.25 closes at 00:00 of day SHIFT_DAY + 3.
    assert first == result.shift_time + timedelta(days=3)
    assert result.psi_time_to_detect_h == 72
    assert "credit_utilization" in {f for a in psi for f in a.features}
    assert result.drift, "daily PSI per feature for the report"
    assert max(result.drift[SHIFT_DAY + 2].values()) > 0.25
    assert max(result.drift[SHIFT_DAY - 1].values()) < 0.25


def test_v3_is_retrained_by_the_alert(story: tuple[StoryResult, Stack, Path]) -> None:
    result, _, _ = story
    v3 = result.versions["v3"]
    assert v3 > result.versions["broken"]
    psi_ids = {a.id for a in result.alerts if a.rule == "feature_psi_3d"}
    assert result.retrain_alert_id in psi_ids
    assert result.v3_trigger == f"alert:{result.retrain_alert_id}"
    canary = result.rollouts["v3"]
    assert canary.candidate_version == v3
    # the platform started it by the model's promotion policy (the demo only waited for it)
    assert canary.started_by == "registry-policy"
    start = canary.decisions[0]
    assert start.verdict == "start", start
    for needle in (f"v{v3}", "promotion policy", result.v3_trigger):
        assert needle in start.reason, start.reason
    assert canary.stable_version == result.versions["v2"]
    # the demo followed it to its end: with the default model checks and delayed labels flowing,
    # the controller took the retrained version through every step to 100 % and production
    assert canary.state == rollout_pb2.ROLLOUT_STATE_PROMOTED, [
        (d.verdict, d.reason) for d in canary.decisions
    ]
    assert list(canary.steps) == list(STEPS)
    advanced = [d.step_index for d in canary.decisions if d.verdict == "advance"]
    assert advanced == list(range(len(STEPS) - 1)), [(d.verdict, d.reason) for d in canary.decisions]
    assert canary.weight == 100.0
    assert result.production["v3"] == v3


def test_report_and_measurements(story: tuple[StoryResult, Stack, Path]) -> None:
    result, _, tmp = story
    assert result.report_path is not None
    page = result.report_path.read_text()
    for plot in ("plot-drift", "plot-scores", "plot-rollout-0", "plot-latency"):
        assert f'id="{plot}"' in page
    assert "what drove it" in page  # each analysis decision's statistics
    assert "SRM ok" in page
    assert (tmp / "report" / "report.json").exists()
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.time_to_detect_h is not None
    assert 0 <= result.time_to_detect_h <= 72
    assert (tmp / "wandb").is_dir()


def test_the_demo_prints_the_console_and_links_to_its_pages(story: tuple[StoryResult, Stack, Path]) -> None:
    """The platform's table names the web console's address; the summary and the report link to
    the console's page of each version and rollout of the story, its drift and its decisions."""
    result, _, tmp = story
    console = result.targets["console"]
    assert console.startswith("http://127.0.0.1:"), console
    narrative = (tmp / "story.log").read_text()
    assert re.search(rf"\bconsole\W+{re.escape(console)}\W", narrative), "the platform table's console row"
    report = result.report_path.read_text() if result.report_path else ""
    pages = [f"{console}/", f"{console}/alerts", f"{console}/decisions"]
    pages += [f"{console}/models/{MODEL}/versions/{v}" for v in result.versions.values()]
    pages += [f"{console}/models/{MODEL}/versions/{result.versions['v1']}/drift"]
    pages += [f"{console}/rollouts/{r.id}" for r in result.rollouts.values()]
    for page in pages:
        assert re.search(rf"  console, [^:\n]+: {re.escape(page)}\n", narrative), page
        assert f'href="{page}"' in report, page


def test_the_stack_is_stopped_at_the_end(story: tuple[StoryResult, Stack, Path]) -> None:
    result, st, _ = story
    assert st.targets() == {}
    served: dict[str, Any] = result.targets
    assert {"registry", "model-server", "serve", "monitor", "gateway"} <= served.keys()
