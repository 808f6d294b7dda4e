"""The demo's story, shortened for the end-to-end tests (``tests/e2e``): the same code path as
``finpredict demo`` (:mod:`finpredict.demo.story`), on a stack of the test's own (its own run dir,
free ports, its own Ray, its own DVC cache and remote), so it never meets a developer's ``task up``.

Shortened: smaller training data, one-second analysis intervals, canary steps from 5% instead of
1% (a step needs 20x less traffic), a shorter replay, and more rounds of the pipeline's latency
measurement because the shared test machine's cores are busy with other work (the gates stay the
registry's default promotion policy).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from finpredict.demo.story import StoryConfig, StoryResult, run_story
from finpredict.stack.launcher import Stack

# Training rows of every version (the demo: 50,000 for v1, 20,000 after). Fewer rows make v1 and
# v2 differ enough (score KL ~0.03 at 10,000 rows) for a 200-request canary window to breach
# KL 0.1 now and then; at 20,000 they agree (KL < 0.01) and the pipeline costs about the same.
ROWS = 20_000
SHIFT_DAY = 10
STEPS = (5.0, 25.0, 100.0)  # the demo: 1 -> 5 -> 25 -> 100
# The training pipeline's params for every version (the monitor's retraining run included): less
# data, and the compute gate pooled over 10 rounds (not 3) of single-row predictions: a longer
# measurement, so that a burst of load from other work on a CI machine is a smaller share of its
# timings (every timing counts: never the best round). The gates themselves are not loosened:
# the registry promotes only versions within its default policy (compute p99 <= 50 ms among
# them).
PARAMS: dict[str, object] = {"data.rows": ROWS, "evaluate.compute_rounds": 10}


def own_stack(tmp: Path, profile: str = "embedded") -> Stack:
    """A stack of the test's own in ``tmp/run`` on free ports."""
    return Stack(
        run_dir=tmp / "run", data_dir=tmp / "run" / "platform", ephemeral_ports=True, profile=profile
    )


def run_short_story(stack: Stack, tmp: Path, *, keep: bool = False) -> StoryResult:
    """Runs the shortened story on ``stack`` with the demo's files in ``tmp`` (its narrative and the
    stack's log lines in ``tmp/story.log``; their tail on stderr when it fails, after stopping the
    stack). ``keep``: leave the stack running at the end (the caller stops it)."""
    log = tmp / "story.log"
    with log.open("w") as out:
        console = Console(file=out, width=160, force_terminal=False)
        stack.log = lambda s: console.print(s, highlight=False)
        cfg = StoryConfig(
            stack=stack,
            work_dir=tmp,
            report_path=tmp / "report" / "report.html",
            console=console,
            keep=keep,
            dvc_cache=None,  # a cache of its own: nothing comes from (or goes to) the project's
            dvc_remote=tmp / "dvc-remote",
            v1_params=PARAMS,
            next_params=PARAMS,
            pool_rows=10_000,
            v1_min_rows=1000,
            steps=STEPS,
            analysis_interval_s=1.0,
            replay_first_day=SHIFT_DAY - 1,
            replay_days=SHIFT_DAY + 3,
            replay_shift_day=SHIFT_DAY,
            replay_per_hour=40,
            retrain_timeout_s=400,
        )
        try:
            return run_story(cfg)
        except BaseException:
            stack.down()  # run_story stops the stack itself unless kept; this is the belt to its braces
            out.flush()
            sys.stderr.write(log.read_text(errors="replace")[-20000:])
            raise
