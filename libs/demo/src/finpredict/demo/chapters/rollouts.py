"""Chapters 5, 6 and 9: canary rollouts through the gateway's RolloutService, watched live: v2 to
promotion, the broken candidate to its automatic rollback, and the retrained v3, which the
platform puts into a canary by itself (the model's promotion policy hands it off, see
:func:`hand_off_to_canary`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.demo.chapters.serving import start_traffic
from finpredict.demo.chapters.training import gate_table
from finpredict.demo.platform import MODEL

if TYPE_CHECKING:
    from finpredict.demo.story import Story

ROLLOUT_STATE = {
    rollout_pb2.ROLLOUT_STATE_PROGRESSING: "progressing",
    rollout_pb2.ROLLOUT_STATE_PAUSED: "paused",
    rollout_pb2.ROLLOUT_STATE_PROMOTED: "promoted",
    rollout_pb2.ROLLOUT_STATE_ROLLED_BACK: "rolled back",
    rollout_pb2.ROLLOUT_STATE_ABORTED: "aborted",
}
ENDED = (
    rollout_pb2.ROLLOUT_STATE_PROMOTED,
    rollout_pb2.ROLLOUT_STATE_ROLLED_BACK,
    rollout_pb2.ROLLOUT_STATE_ABORTED,
)
VERDICT_STYLE = {"advance": "green", "promoted": "bold green", "rollback": "bold red", "wait": "yellow"}


def start_rollout(story: Story, version: int) -> rollout_pb2.Rollout:
    """Starts a rollout with the demo's steps and interval; the analysis thresholds are left unset
    (the gateway's defaults: the case study's limits)."""
    cfg = story.cfg
    request = rollout_pb2.StartRolloutRequest(
        model=MODEL,
        candidate_version=version,
        steps=list(cfg.steps),
        analysis_interval=duration_pb2.Duration(
            seconds=int(cfg.analysis_interval_s), nanos=int(cfg.analysis_interval_s % 1 * 1e9)
        ),
        min_requests_per_step=cfg.min_requests_per_step,
    )
    return story.p.rollouts.StartRollout(request, metadata=story.p.admin, timeout=30).rollout


def hand_off_to_canary(story: Story) -> None:
    """Turns the model's hand-off on: from now on a version that satisfies the registry's promotion
    policy enters a canary by itself, started by the gateway's rollout controller, with the
    demo's rollout settings (the steps and interval of the other rollouts; every threshold keeps its
    default: a version retrained on a shifted population scores differently from stable but like
    its own training profile)."""
    cfg = story.cfg
    current = story.p.registry.GetPolicy(
        registry_pb2.GetPolicyRequest(model=MODEL), metadata=story.p.admin, timeout=30
    ).policy
    hand_off = registry_pb2.HandOff(
        mode=registry_pb2.HAND_OFF_MODE_CANARY,
        steps=list(cfg.steps),
        min_requests_per_step=cfg.min_requests_per_step,
    )
    hand_off.analysis_interval.FromNanoseconds(round(cfg.analysis_interval_s * 1e9))
    policy = registry_pb2.PromotionPolicy(
        gates=current.gates, required_lineage=current.required_lineage, hand_off=hand_off
    )
    got = story.p.registry.SetPolicy(
        registry_pb2.SetPolicyRequest(model=MODEL, policy=policy, reason="retrained versions enter a canary"),
        metadata=story.p.admin,
        timeout=30,
    ).policy
    story.say(
        f"{MODEL}'s promotion policy now hands a version registered after v{got.hand_off.after_version} "
        "that satisfies it off to a canary by itself (`finpredict models policy set --hand-off canary`): "
        "the gateway's rollout controller starts it with the default model checks (a model retrained "
        "on a shifted population scores differently from stable, but like its own training profile)"
    )


def wait_for_policy_rollout(story: Story, version: int, timeout: float) -> rollout_pb2.Rollout:
    """The rollout of ``version`` the platform started by policy (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            latest = story.p.rollouts.GetRollout(
                rollout_pb2.GetRolloutRequest(model=MODEL), metadata=story.p.admin, timeout=30
            ).rollout
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            if latest.candidate_version == version:
                return latest
        time.sleep(0.5)  # polling the gateway's rollouts with a deadline
    check = story.p.registry.GetPolicy(
        registry_pb2.GetPolicyRequest(model=MODEL, version=version), metadata=story.p.admin, timeout=30
    ).check
    raise TimeoutError(
        f"the platform started no rollout of v{version} within {timeout:.0f} s"
        + (f"; the policy refuses it: {'; '.join(check.problems)}" if check.problems else "")
    )


def get_rollout(story: Story, rollout_id: str) -> rollout_pb2.Rollout:
    return story.p.rollouts.GetRollout(
        rollout_pb2.GetRolloutRequest(rollout_id=rollout_id), metadata=story.p.admin, timeout=30
    ).rollout


def watch_rollout(
    story: Story, rollout: rollout_pb2.Rollout, until: Callable[[rollout_pb2.Rollout], bool], timeout: float
) -> rollout_pb2.Rollout:
    """Shows the rollout live (step, weight, both variants' metrics, decisions) until ``until``."""
    t0 = time.monotonic()
    last = rollout
    with Live(render_rollout(story, last), console=story.con, refresh_per_second=4) as live:
        while not until(last):
            if time.monotonic() - t0 > timeout:
                live.update(render_rollout(story, last))
                raise TimeoutError(f"rollout {last.id} did not finish within {timeout:.0f} s")
            time.sleep(0.5)  # polling the rollout's state with a deadline
            last = get_rollout(story, rollout.id)
            live.update(render_rollout(story, last))
    story.con.line()
    return last


def render_rollout(story: Story, r: rollout_pb2.Rollout) -> RenderableType:
    started = r.started_at.ToDatetime(tzinfo=UTC)
    end = r.ended_at.ToDatetime(tzinfo=UTC) if r.state in ENDED else datetime.now(UTC)
    steps = " -> ".join(
        f"[bold reverse]{s:g}%[/]" if i == r.step_index and r.state not in ENDED else f"{s:g}%"
        for i, s in enumerate(r.steps)
    )
    state = ROLLOUT_STATE.get(r.state, "?")
    colour = {"promoted": "green", "rolled back": "red", "aborted": "red"}.get(state, "yellow")
    head = Text.from_markup(
        f"  rollout {r.id}: {MODEL} v{r.stable_version} -> v{r.candidate_version}   "
        f"[{colour}]{state}[/]   steps {steps}   canary weight [bold]{r.weight:g}%[/]   "
        f"t = {(end - started).total_seconds():.1f} s"
    )
    metrics = Table(
        "variant", "version", "requests", "errors", "single calls", "p50 ms", "p99 ms", "batch p99 ms",
        "mean score", box=None,
    )  # fmt: skip
    for m in r.metrics:  # p50/p99: of the single-application calls; batch p99: per batch call
        metrics.add_row(
            m.variant,
            f"v{m.version}",
            f"{m.requests:,}",
            f"{m.error_rate:.2%}",
            f"{m.calls:,}",
            f"{m.p50_latency_ms:.1f}",
            f"{m.p99_latency_ms:.1f}",
            f"{m.batch_p99_latency_ms:.1f}",
            f"{m.mean_score:.4f}",
        )
    decisions = Table("t", "step", "verdict", "reason", box=None)
    for d in list(r.decisions)[-8:]:
        t = (d.time.ToDatetime(tzinfo=UTC) - started).total_seconds()
        style = VERDICT_STYLE.get(d.verdict, "")
        decisions.add_row(
            f"+{t:.1f} s", f"{r.steps[min(d.step_index, len(r.steps) - 1)]:g}%",
            f"[{style}]{d.verdict}[/]" if style else d.verdict, d.reason,
        )  # fmt: skip
    # The metrics are those of the current analysis window: gone once the rollout has ended.
    parts: list[RenderableType] = [head, decisions] if r.state in ENDED else [head, metrics, decisions]
    if story.traffic is not None:
        c = story.traffic.snapshot()
        mix = ", ".join(f"v{v} {n / max(c.rows, 1):.0%}" for v, n in sorted(c.by_version.items()))
        parts.append(
            Text(f"  traffic: {c.rows:,} applications scored so far ({mix}); labels sent {c.labels_sent:,}")
        )
    return Group(*parts)


def rollout_v2(story: Story) -> None:
    cfg, traffic = story.cfg, story.traffic
    assert traffic is not None
    v1, v2 = story.result.versions["v1"], story.result.versions["v2"]
    story.con.print(gate_table(story, v2, f"v{v2}: trained on the next month"))
    warm = story.warm_up(v2, story.pools["none"])
    traffic.phase = "v2 rollout"
    traffic.rate = None
    traffic.resume()
    rollout = start_rollout(story, v2)
    t = rollout.thresholds  # the gateway's defaults, as the rollout recorded them
    story.say(
        f"canary analysis every {cfg.analysis_interval_s:g} s once each variant has "
        f"{cfg.min_requests_per_step} requests in the window; each variant's inputs and scores are "
        f"judged against its own training profile (training/serving skew per feature and score "
        f"consistency, PSI {t.max_score_psi:g} beyond stable's own shift), errors "
        f"+{t.max_error_rate_increase:.0%}, and latency with the default limits: p99 per application "
        f"{t.max_p99_latency_ms:g} ms and {t.max_p99_latency_ratio:g}x stable's, tested on the "
        f"single-application calls (the {cfg.traffic_batch}-application batches are timed per "
        f"call and reported, not judged against a per-application SLO; both variants over the "
        f"SLO hold the step: the platform, not the candidate); v{v2} pre-loaded on the model "
        f"server ({warm * 1000:.0f} ms)"
    )
    final = watch_rollout(story, rollout, lambda r: r.state in ENDED, cfg.rollout_timeout_s)
    story.result.rollouts["v2"] = final
    production = story.p.production()
    story.result.production["v2"] = production
    audit = story.p.registry.ListAuditLog(
        registry_pb2.ListAuditLogRequest(model=MODEL, page_size=1000), metadata=story.p.admin, timeout=30
    ).entries
    moves = [e for e in audit if e.alias == "production" and e.to_version == v2]
    story.result.promotion_actor = moves[-1].actor if moves else ""
    if final.state != rollout_pb2.ROLLOUT_STATE_PROMOTED:
        raise RuntimeError(
            f"v2's rollout ended {ROLLOUT_STATE.get(final.state)}: {final.decisions[-1].reason}"
        )
    story.result.commit_to_production_s = (
        final.ended_at.ToDatetime(tzinfo=UTC).timestamp() - story.v2_train_started
    )
    took = (final.ended_at.ToDatetime() - final.started_at.ToDatetime()).total_seconds()
    story.say(
        f"[green]promoted[/]: production v{v1} -> v{production}, moved by "
        f"'{story.result.promotion_actor}' (compare-and-set, audited) {took:.0f} s after the rollout "
        f"started; commit to production (v2's training started -> production) "
        f"{story.result.commit_to_production_s:.0f} s"
    )
    advances = sum(1 for d in final.decisions if d.verdict == "advance")
    story.add(
        f"canary rollout v{v1} -> v{v2} ({' -> '.join(f'{s:g}%' for s in cfg.steps)})",
        f"promoted after {advances} analyses; production = v{production} (by {story.result.promotion_actor})",
        f"{took:.0f} s; commit to production {story.result.commit_to_production_s:.0f} s",
    )


def rollout_broken(story: Story) -> None:
    cfg, traffic = story.cfg, story.traffic
    assert traffic is not None
    bad = story.result.versions["broken"]
    story.say(
        f"candidate v{bad} passed its gates, on a test split as broken as its training data; in "
        "production its debt service coverage arrives as a ratio again (1.25, not 125)"
    )
    story.warm_up(bad, story.pools["none"])
    traffic.phase = "broken canary"
    rollout = start_rollout(story, bad)
    final = watch_rollout(story, rollout, lambda r: r.state in ENDED, cfg.rollout_timeout_s)
    story.result.rollouts["broken"] = final
    story.result.production["broken"] = story.p.production()
    seconds = (final.ended_at.ToDatetime() - final.started_at.ToDatetime()).total_seconds()
    reason = final.decisions[-1].reason if final.decisions else ""
    if final.state == rollout_pb2.ROLLOUT_STATE_ROLLED_BACK:
        story.result.time_to_rollback_s = seconds
        story.say(
            f"[red]rolled back[/] automatically {seconds:.1f} s after it started, at the first analysis "
            f"with enough canary rows to judge its inputs against its training profile: {reason}; "
            f"production stays v{story.result.production['broken']} (a rollback never touches the aliases)"
        )
    else:
        story.say(f"[red]the broken candidate was not rolled back[/] ({ROLLOUT_STATE.get(final.state)})")
    story.add(
        f"canary rollout of broken v{bad}",
        f"{ROLLOUT_STATE.get(final.state)}: {reason}",
        f"rolled back {seconds:.1f} s after the start" if story.result.time_to_rollback_s else "",
    )
    traffic.stop()


def canary_v3(story: Story) -> None:
    """Follows the retrained version's canary, which the platform started by policy, to its end
    (promoted, or rolled back with the statistics that drove it) while recession-era applications
    and their delayed labels flow; the demo takes no platform step and overrides no limit."""
    cfg = story.cfg
    v2, v3 = story.result.versions["v2"], story.result.versions["v3"]
    story.warm_up(v3, story.pools["recession"])
    rollout = wait_for_policy_rollout(story, v3, cfg.rollout_timeout_s)
    story.say(
        f"v{v3} entered a canary at {cfg.steps[0]:g}% by itself: {rollout.decisions[0].reason}; "
        "recession-era applications flow, their outcomes follow through the gateway, and the "
        "controller takes it through its steps (the demo only watches)"
    )
    traffic = start_traffic(story, story.pools["recession"], "v3 canary", "biz-r")
    traffic.rate = None  # as fast as the senders go: each step needs its requests per variant
    try:
        final = watch_rollout(story, rollout, lambda r: r.state in ENDED, cfg.rollout_timeout_s)
    finally:
        traffic.stop()
    story.result.rollouts["v3"] = final
    story.result.production["v3"] = story.p.production()
    state = ROLLOUT_STATE.get(final.state, "?")
    took = (final.ended_at.ToDatetime() - final.started_at.ToDatetime()).total_seconds()
    reason = final.decisions[-1].reason if final.decisions else ""
    if final.state == rollout_pb2.ROLLOUT_STATE_PROMOTED:
        advances = sum(1 for d in final.decisions if d.verdict == "advance")
        story.say(
            f"[green]promoted[/] by the controller after {advances} analyses, {took:.0f} s after it "
            f"started: production v{v2} -> v{story.result.production['v3']}"
        )
        outcome = f"promoted ({' -> '.join(f'{s:g}%' for s in final.steps)}); production = v{v3}"
    else:
        story.say(f"[red]v{v3}'s rollout ended {state}[/] after {took:.0f} s: {reason}")
        outcome = f"{state} at step {final.steps[min(final.step_index, len(final.steps) - 1)]:g}%: {reason}"
    story.add(f"canary of retrained v{v3} (started by the platform)", outcome, f"{took:.0f} s")
