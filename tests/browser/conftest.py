"""A real browser for every page: Debian's Chromium driven by Playwright, axe-core from npm.

The browser is started once per session and stopped in a finalizer; each test gets a fresh
context (cookies, storage) and page. Without Chromium the tests are skipped locally and fail
when ``FOOTDROP_REQUIRE_BROWSER=1`` (CI). Screenshots go to ``test-artifacts/`` (untracked).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: Where `make test` puts axe-core (npm install --prefix $(VENV)/node axe-core).
AXE_JS = Path(sys.prefix) / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]


def _missing(what: str) -> None:
    if os.environ.get("FOOTDROP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FOOTDROP_REQUIRE_BROWSER=1 but {what}")
    pytest.skip(what)


def chromium_path() -> str | None:
    explicit = os.environ.get("FOOTDROP_CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (Playwright's sync API)."""
    executable = chromium_path()
    if executable is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[integration]')")
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=120_000
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        manager.stop()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh context and page, 1280 px wide; generous timeouts for a busy machine."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Write a full-page PNG to test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[Any]:
    """Run axe-core in the page; the violations of the given impacts (id, impact, targets)."""
    if not AXE_JS.is_file():
        _missing(f"axe-core is not installed at {AXE_JS} (make test installs it with npm)")
    # Evaluated through the DevTools protocol, not as a <script> tag: pages with a strict CSP
    # (no inline script) are checked too.
    page.evaluate(AXE_JS.read_text(encoding="utf-8") + "\n;0")
    found = page.evaluate(
        "async () => (await axe.run(document)).violations.map(v => ({id: v.id, impact: v.impact,"
        " targets: v.nodes.map(n => n.target.join(' '))}))"
    )
    return [v for v in found if v["impact"] in impacts]
