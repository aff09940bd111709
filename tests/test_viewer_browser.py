"""A real browser on the real server: `chexcft view` on a free 127.0.0.1 port, headless Chromium through Playwright
picks a study, waits for the Grad-CAM image, saves a screenshot and checks the study's predictions are shown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.viewer_builders import make_viewer_inputs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STARTUP_SECONDS = 240
PAGE_MS = 240_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the viewer exited with code {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"the viewer did not answer on {url} within {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (started with start_new_session), then kill it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def pick_option(page, picker, query: str, text: str, attempts: int = 5) -> None:
    """Open a selectbox, type `query` and click the option showing `text`, once the app is idle.

    A script rerun that is still under way (the first one takes a while on a loaded machine) re-renders the
    selectbox and closes its list: wait for Streamlit's running indicator to go, and reopen the list if it closed.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    for _ in range(attempts):
        expect(page.locator('[data-testid="stStatusWidget"]')).to_be_hidden(timeout=PAGE_MS)
        picker.click()
        page.keyboard.type(query)
        try:
            page.get_by_role("option").filter(has_text=text).first.click(timeout=30_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"the option {text!r} never appeared after typing {query!r} ({attempts} attempts)")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_picks_a_study_and_sees_its_heatmap_and_predictions(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (run `make system-deps` as root to install Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    from chexcft.data import read_table
    from chexcft.predict import predict_table

    inputs = make_viewer_inputs(tmp_path / "inputs")
    study = inputs.tree.dicom_study
    frontal = f"{study}/view1_frontal.dcm"
    expected = predict_table(read_table(inputs.data_csv, inputs.tree.root), [inputs.ensemble_dir]).predictions
    atelectasis = float(expected.set_index("Path").loc[frontal, "Atelectasis"])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "chexcft", "view", *inputs.argv(), "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        wait_healthy(url, process, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.set_default_timeout(PAGE_MS)
                page.goto(url)
                expect(page.get_by_text("chexcft viewer")).to_be_visible(timeout=PAGE_MS)
                picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Study").last
                expect(picker).to_be_visible(timeout=PAGE_MS)
                pick_option(page, picker, "patient90001", study)
                heatmap = page.locator(f'img[alt*="{frontal}"][alt*="Grad-CAM"]')
                expect(heatmap).to_be_visible(timeout=PAGE_MS)
                expect(page.get_by_text("Predictions · view1_frontal.dcm")).to_be_visible(timeout=PAGE_MS)
                value = page.locator('[data-testid="stMetricValue"]').first
                expect(value).to_have_text(f"{atelectasis:.3f}", timeout=PAGE_MS)
                screenshot = tmp_path / "viewer.png"
                page.screenshot(path=str(screenshot), full_page=True)
                assert screenshot.stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        stop(process)
    assert process.poll() is not None
