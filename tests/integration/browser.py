"""A real browser on `tsp ui`: headless Debian Chromium driven by Playwright.

`make setup` installs Chromium (Debian's `chromium` package); Playwright drives that
binary through `executable_path`, so no browser is ever downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tsp_mlflow.tracking.loopback_server import free_port

UI_TIMEOUT_MS = 60_000  # the first page load compiles MLflow's JavaScript bundle


def chromium() -> str:
    """Debian's Chromium; missing is a set-up error, never a skip."""
    found = os.environ.get("TSP_CHROMIUM") or shutil.which("chromium")
    assert found, (
        "no chromium on PATH: the browser test drives Debian's Chromium; run `make setup` "
        "(it runs apt-get install chromium) or set TSP_CHROMIUM to a Chromium binary"
    )
    return found


@contextmanager
def tsp_ui(store: str, folder: Path, env: dict[str, str]) -> Iterator[str]:
    """`tsp ui` as a user starts it; yields the URL it printed; Ctrl-C (SIGINT) stops it."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "tsp"),
        "ui",
        "--backend-store-uri",
        store,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once the server answers
        match = re.search(r"open (http://\S+)", first)
        assert match, (
            f"tsp ui printed {first!r}: {'' if proc.poll() is None else proc.stdout.read()}"
        )
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Say why it did not stop: its signal dispositions, and the server's last lines.
            status = Path(f"/proc/{proc.pid}/status")
            masks = [ln for ln in status.read_text().splitlines() if ln.startswith("Sig")]
            log = folder / ".tsp-ui" / "server.log"
            tail = log.read_text()[-1500:] if log.exists() else "(no server log)"
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"tsp ui ignored Ctrl-C for 30 s; {masks}\n{tail}") from None
    assert proc.returncode == 0 and "stopping" in out, out


def check_experiment_page(
    url: str,
    experiment_id: str,
    parent: tuple[str, str],
    children: Sequence[str],
    figures: Sequence[tuple[str, str]],
    screenshot: Path,
) -> None:
    """The experiment's runs page lists ``parent`` (run id, name) with a collapsed row of
    children that expands to ``children`` (run names); each ``(run id, artifact path)``
    figure opens in the run's Artifacts tab as an image the browser decoded."""
    from playwright.sync_api import expect, sync_playwright

    parent_id, parent_name = parent
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{url}/#/experiments/{experiment_id}/runs", wait_until="load")
            link = page.get_by_role("link", name=parent_name, exact=True)
            expect(link).to_be_visible()
            assert parent_id in (link.get_attribute("href") or "")
            # Children are nested under their parent: hidden until its row is expanded.
            for name in children:
                expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
            row = page.locator("[role=gridcell]", has=link)
            row.locator("button[data-component-id*=runnamecellrenderer]").click()
            for name in children:
                expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
            page.screenshot(path=str(screenshot.with_suffix(".runs.png")))
            for run_id, path in figures:
                page.goto(
                    f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}",
                    wait_until="load",
                )
                image = page.get_by_role("img", name=path, exact=True)
                expect(image).to_be_visible()
                page.wait_for_function(
                    "i => i.complete && i.naturalWidth > 0", arg=image.element_handle()
                )
                width = image.evaluate("i => i.naturalWidth")
                assert width >= 200, (path, width)  # the PNG was served and decoded
            page.screenshot(path=str(screenshot.with_suffix(".artifact.png")))
        finally:
            browser.close()
