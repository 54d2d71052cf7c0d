"""Browser tests: Playwright (sync API) driving Debian's chromium against the console served by a real
uvicorn server on a free port. One browser per session, one server per module, a fresh context (no
cookies) per test. Screenshots go to $TUNESMITH_SCREENSHOTS when it is set.

Without /usr/bin/chromium (or Playwright) these tests skip, saying why; with TUNESMITH_REQUIRE_BROWSER
set (CI, `.ci/run`) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, start_uvicorn
from tests.ui_registry import Filled, fill
from tunesmith.ui.app import create_ui_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
INSTALL_HINT = (
    "the browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium) and playwright"
)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One browser for this folder's tests, stopped when they end: Playwright's sync API keeps an event
    loop running on the main thread while it is open, which breaks every later test that calls
    `asyncio.run` (the serving tests)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.is_file():
        if os.environ.get("TUNESMITH_REQUIRE_BROWSER"):  # CI (.ci/run) must run these tests
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Console:
    url: str
    filled: Filled
    root: Path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    filled = fill(root)
    port = free_port()
    server, thread = start_uvicorn(
        create_ui_app(filled.registry, secret_path=root / "secret"), "127.0.0.1", port
    )
    try:
        yield Console(f"http://127.0.0.1:{port}", filled, root)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Any, console: Console, who: str) -> None:
    """Sign in through the form, as a person would."""
    page.goto(f"{console.url}/login")
    page.fill("#key", console.filled.keys[who])
    page.click("#sign-in")
    page.wait_for_url(f"{console.url}/runs")


def screenshot(page: Any, name: str) -> None:
    """A full-page PNG into $TUNESMITH_SCREENSHOTS (nothing when unset)."""
    folder = os.environ.get("TUNESMITH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
