"""Time to a first card: ``cds-service serve`` started, its ready line, a card in Chromium.

``python -m benchmarks.first_card`` starts the service as ``make serve`` does (development
settings, nginx in front when installed) on a free port, waits for the line it prints when ready,
then drives Chromium (Playwright) like a new user: open the URL in that line, choose the first
demo patient, wait until its card is drawn. It prints three figures (seconds): start to ready
line, ready line to rendered card, and the whole. Needs ``.[integration]`` and Chromium.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.slow_clients import free_port

READY = re.compile(r"footdrop-cds ready: open (\S+) \(card preview\)")
DEADLINE_SECONDS = 120.0


def _chromium() -> str:
    import shutil

    found = os.environ.get("FOOTDROP_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise SystemExit("first_card: Chromium is needed (apt-get install chromium)")
    return found


def measure() -> dict[str, float]:
    """One run from a cold ``cds-service serve`` to a card on screen."""
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="first-card-"))
    log = workdir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["PORT"] = str(free_port())
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        url = None
        while url is None:
            found = READY.search(log.read_text(errors="replace"))
            if found:
                url = found[1]
            elif process.poll() is not None or time.monotonic() - started > DEADLINE_SECONDS:
                raise SystemExit(f"first_card: no ready line: {log.read_text()[-1500:]}")
            else:
                time.sleep(0.02)
        ready = time.monotonic()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=_chromium(), args=["--headless=new", "--no-sandbox"]
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.locator(".demos a").first.click()
                page.locator("article.card .summary").first.wait_for(state="visible")
                card = time.monotonic()
            finally:
                browser.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    return {
        "start_to_ready": ready - started,
        "ready_to_card": card - ready,
        "total": card - started,
    }


def main() -> int:
    figures = measure()
    for name, seconds in figures.items():
        print(f"{name:<16} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
