"""Browser-test fixtures: Debian's Chromium driven by Playwright for Python, against the real app served by uvicorn on
a loopback port with the tiny SD1 checkpoint of tests/fixtures.

Chromium comes from the system (/usr/bin/chromium, installed by ./run-tests.sh when missing); Playwright never
downloads a browser. Screenshots go to tests/ui/screenshots (ignored by git) for people to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_PACKAGE = "chromium"
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_FONT_PACKAGE = "fonts-noto-color-emoji"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}


def _ensure_chromium() -> str:
    """/usr/bin/chromium, installing Debian's package when it is missing and we are root (as ./run-tests.sh does);
    likewise Debian's colour emoji font, so the emoji buttons render in the screenshots instead of empty boxes."""
    missing = [pkg for pkg, path in ((CHROMIUM_PACKAGE, CHROMIUM), (EMOJI_FONT_PACKAGE, EMOJI_FONT))
               if not os.path.exists(path)]
    if missing and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run ./run-tests.sh (it installs Debian's chromium) or, as root, "
                    "apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # a shared 2-core CI machine is slow to render and to answer

    executable = _ensure_chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def ui_server(models_root, tmp_path_factory):
    """(base_url, app, data_dir): the UI (with --api) over a data dir holding the tiny SD1 checkpoint."""
    from tests.api.live_server import data_dir_with, live_server

    data = data_dir_with(tmp_path_factory.mktemp("ui-data"), models_root, "tiny-sd15.safetensors")
    # a second checkpoint (the same tiny weights under another name) for the checkpoint dropdown
    ckpts = data / "models" / "Stable-diffusion"
    os.symlink(os.readlink(ckpts / "tiny-sd15.safetensors"), ckpts / "tiny-sd15-b.safetensors")
    (data / "config.json").write_text('{"sd_model_checkpoint": "tiny-sd15.safetensors"}')
    with live_server(["--api", "--data-dir", str(data)]) as (url, app):
        yield url, app, data


@pytest.fixture
def page(browser, ui_server):
    """A fresh browser page on the UI, loaded (prompt box visible), console errors collected in ``page.errors``."""
    url = ui_server[0]
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.goto(url + "/")
    p.wait_for_selector("#txt2img_prompt textarea")
    try:
        yield p
    finally:
        context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
