"""The runs page in a real headless Chromium while a run goes on (the page redraws every 3 s): compare picks survive
the redraws, and entering the key again does not start a second polling loop (#36 low item)."""

import time

import pytest
from ragft.eval.store import Store
from ragft.service.app.api.main import create_app

from tests.app.test_ui import CHROMIUM, browser, serve  # noqa: F401  (browser: the fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary: see tests/app/test_ui.py")


@pytest.fixture
def url(stored_runs):
    store = Store(stored_runs.settings.database)
    store.create_run("running", "priced", {"spec": {"corpus": str(stored_runs.corpus), "arms": ["base"]}})
    store.set_status("running", "evaluating")  # a run still answering: the page redraws every 3 s
    store.close()
    yield from serve(create_app(stored_runs.settings, stored_runs.corpus))


def test_picks_survive_the_redraws_and_one_loop_polls(url, browser):  # noqa: F811
    page = browser.new_context().new_page()
    asked: list[float] = []
    page.on("request", lambda r: asked.append(time.monotonic()) if r.url.endswith("/v1/results") else None)
    page.goto(f"{url}/ui")
    page.wait_for_selector("#runs tr[data-run='priced-a']")
    page.check("#runs tr[data-run='priced-a'] input.pick")
    page.check("#runs tr[data-run='priced-b'] input.pick")
    drawn, deadline = len(asked), time.monotonic() + 30
    while len(asked) < drawn + 2:  # two redraws of the page
        assert time.monotonic() < deadline, "the runs page did not redraw while a run goes on"
        page.wait_for_timeout(200)
    page.wait_for_selector("#runs tr[data-run='priced-b']")
    assert page.is_checked("#runs tr[data-run='priced-a'] input.pick")  # before: every redraw dropped the picks
    assert page.is_checked("#runs tr[data-run='priced-b'] input.pick") and page.is_enabled("#compare-button")
    page.reload()
    page.wait_for_selector("#runs tr[data-run='priced-a']")
    assert page.is_checked("#runs tr[data-run='priced-a'] input.pick")

    for _ in range(3):  # the key entered three times: each draws the page again
        page.click("#key-toggle")
        page.fill("#key-input", "any-key-0123456789")
        page.click("#key-form button[type=submit]")
        page.wait_for_timeout(300)
    asked.clear()
    page.wait_for_timeout(6500)
    assert 1 <= len(asked) <= 3, asked  # one loop: a request every 3 s (before: four loops, eight or more)
    page.click("#compare-button")
    page.wait_for_url(f"{url}/ui/compare/priced-a/priced-b")
