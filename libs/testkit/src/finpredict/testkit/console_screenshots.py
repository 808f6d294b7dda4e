"""Screenshots of every console page for the README (``docs/console/*.png``):

    uv run --locked python -m finpredict.testkit.console_screenshots [--out docs/console]

Starts the test stack of :mod:`finpredict.testkit.console` (registry, monitor, gateway on the
stand-in model server, console) in a temporary folder, seeds a model with ten days of drifting
history, runs a canary rollout part of the way, and photographs each page in headless Chromium
signed in as the operator (so the rollout page shows its admin buttons).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from finpredict.testkit.browser import chromium, recording_page
from finpredict.testkit.cli import ADMIN_TOKEN
from finpredict.testkit.console import Traffic, console_stack, seed
from finpredict.testkit.paths import REPO_ROOT
from finpredict.testkit.process import wait_for


def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp, console_stack(Path(tmp)) as stack:
        story = seed(stack, prefix="credit-default", requests=120)
        rollout = stack.start_rollout(story.model, story.v2, [5, 25, 50, 100], min_requests=60)
        with Traffic(stack, story.model, batch=10):
            wait_for(lambda: stack.rollout(rollout.id).step_index >= 2, 120, "the canary to reach 50 %")
        stack.wait_logged([story.scored[-1].request_id])
        with chromium() as browser:
            shot = recording_page(browser, stack.console_url, width=1360, height=860)
            page = shot.page
            page.goto("/login")
            page.fill("#token", ADMIN_TOKEN)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#who[data-subject='ops']")
            pages = {
                "models": "/",
                "version": f"/models/{story.model}/versions/{story.v2}",
                "rollout": f"/rollouts/{rollout.id}",
                "drift": f"/models/{story.model}/versions/{story.v1}/drift?days=14",
                "decision": f"/decisions?request_id={story.scored[3].request_id}",
            }
            for name, path in pages.items():
                page.goto(path)
                if name == "rollout":
                    page.wait_for_selector("#live[data-live-status=open]")
                target = out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                written.append(target)
            shot.close()
            if shot.errors:
                raise RuntimeError(f"the browser reported errors: {shot.errors}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "console")
    args = parser.parse_args()
    for path in take(args.out):
        print(path)


if __name__ == "__main__":
    main()
