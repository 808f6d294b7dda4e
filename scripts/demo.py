"""The main job (``task demo``): the whole story of a credit-risk model on one machine.

Starts the platform on embedded defaults (registry on SQLite, local artifact store and DVC
remote, a local Ray with the model server, gateway, monitor, Prometheus and Alertmanager), then:
trains v1 through the DVC pipeline and promotes it; serves it through the gateway with the
client SDK while delayed labels reach the monitor; trains v2 on the next month and rolls it out
1% -> 5% -> 25% -> 100% to production; rolls out a broken candidate and watches the automatic
rollback; replays a recession through the monitor until the drift alerts fire and the
retraining trigger trains v3, which enters a canary; prints the summary and writes the HTML
report (``reports/demo/report.html``). The story itself is ``scripts/demo_story.py``.

The platform's data is fresh on every run (``.run/demo/platform``; ``task up``'s own data in
``.run/`` is left alone). The stack keeps running at the end for exploration (``task down``
stops it); ``--no-keep`` stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack
from demo_story import StoryConfig, run_story
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave the stack running at the end (default; `task down` stops it)",
    )
    parser.add_argument(
        "--report", type=Path, default=ROOT / "reports" / "demo" / "report.html", help="the HTML report"
    )
    args = parser.parse_args(argv)
    console = Console()
    work_dir = stack.RUN_DIR / "demo"
    cfg = StoryConfig(
        stack=stack.Stack(
            run_dir=stack.RUN_DIR,
            data_dir=work_dir / "platform",
            log=lambda s: console.print(s, highlight=False),
        ),
        work_dir=work_dir,
        report_path=args.report,
        console=console,
        keep=args.keep,
        wandb_mode=os.environ.get("WANDB_MODE", "offline"),
    )
    try:
        run_story(cfg)
    except KeyboardInterrupt:
        console.print("[red]interrupted")
        return 130
    except Exception as exc:
        console.print(f"[red]the demo failed: {type(exc).__name__}: {exc}")
        console.print(f"logs: {stack.RUN_DIR}/*.log")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
