"""A real headless browser for tests: Debian's ``chromium`` (installed by ``scripts/setup_os.sh``)
driven by Playwright, with no browser download; pages record every console and page error."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")


def chromium_path() -> Path:
    found = shutil.which("chromium")
    path = Path(found) if found else CHROMIUM
    if not path.exists():
        raise FileNotFoundError(
            "headless Chromium is missing: run `bash scripts/setup_os.sh` (Debian package chromium)"
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the whole block."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path()), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class RecordingPage:
    """A page in its own context (its own cookies) that records console errors and page errors."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()


def recording_page(browser: Browser, base_url: str, width: int = 1360, height: int = 900) -> RecordingPage:
    context = browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
    page = context.new_page()
    recorded = RecordingPage(context, page)
    page.on("console", lambda m: recorded.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: recorded.errors.append(str(e)))
    return recorded
