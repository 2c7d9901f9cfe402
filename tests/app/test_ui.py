"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python client): runs list,
a run's row browser and its filters, one row, two runs compared, a question asked, a key entered, and a model
answer holding markup shown as text. `make test` installs chromium where apt-get can; without a chromium binary
these tests skip and say so.

RAGFT_UI_SCREENSHOTS=docs writes the row browser and comparison screenshots the README shows."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from ragft.service.app.api.main import create_app

from tests.app.api.conftest import KEY
from tests.stored_runs import SCRIPT

CHROMIUM = next((p for p in (os.environ.get("RAGFT_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).is_file()), None)  # fmt: skip
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary (apt-get install chromium, or set RAGFT_CHROMIUM): the browser tests of the web UI "
    "did not run",
)
SCREENSHOTS = os.environ.get("RAGFT_UI_SCREENSHOTS")


def serve(app):
    """`app` on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def url(stored_runs):
    app = create_app(stored_runs.settings, stored_runs.corpus)
    app.state.runtime.index()  # so the rag arm can answer on the ask page
    yield from serve(app)


@pytest.fixture
def browser(stored_runs):
    """Chromium, started after the runs are stored: Playwright's sync client holds an event loop in this thread,
    and scoring (ragas) runs one of its own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.errors = errors
    yield page
    context.close()


def shot(page, name):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_runs_list_then_a_run_filtered_to_disagreements_then_one_row(page, url):
    page.goto(f"{url}/ui")
    page.wait_for_selector("#runs tr[data-run='priced-a']")
    assert page.locator("#runs tr[data-run]").count() == 2
    assert page.locator("#runs tr[data-run='priced-a'] .status").text_content() == "done"
    page.click("#runs a:text('priced-a')")
    page.wait_for_url(f"{url}/ui/runs/priced-a")
    page.wait_for_selector("#verdicts")
    assert page.locator("#verdicts tr").count() == 4  # header and three families
    headers = page.locator("#verdicts th").all_text_contents()  # the two answers a verdict gives, apart
    assert "best relative to the others" in headers and "above chance" in headers
    assert page.locator("img.chart").count() >= 1
    page.wait_for_selector("#row-count:text('20 rows')")
    page.check("input[name=disagree]")
    page.wait_for_selector("#row-count:text('10 rows')")
    assert "disagree=1" in page.url
    page.select_option("select[name=family]", "knowledge")
    page.wait_for_selector("#row-count:text('5 rows')")
    assert page.locator("#row-table tr[data-row='k0'] .mark.correct").text_content() == "Base ✓"
    page.click("#row-table tr[data-row='k0']")
    page.wait_for_selector("#row-detail .answer[data-arm='rag']")
    assert "row=k0" in page.url
    rag = page.locator("#row-detail .answer[data-arm='rag']")
    assert rag.locator(".answer-text").text_content() == "It costs $2."
    assert rag.locator(".mark.wrong").count() == 1
    assert rag.locator(".passage mark").text_content() == "$463"  # the accepted answer, highlighted in the passage
    assert rag.locator(".passage").text_content().startswith("p0, p. 4 · p0-0")  # a paged source cites its page
    assert page.locator("#row-detail .answer[data-arm='base'] .mark.correct").count() == 1
    shot(page, "ui-row-browser.png")
    shared = page.url  # a shared link opens the same rows and the same row
    page.goto(shared)
    page.wait_for_selector("#row-detail .answer[data-arm='rag']")
    assert page.locator("#row-count").text_content().startswith("5 rows")
    assert page.locator("input[name=disagree]").is_checked()
    page.fill("input[name=q]", "P3 ")
    page.wait_for_selector("#row-count:text('1 rows')")
    assert page.errors == []


def test_compare_two_runs_from_the_runs_list(page, url):
    page.goto(f"{url}/ui")
    page.wait_for_selector("#runs tr[data-run='priced-a']")
    page.check("#runs tr[data-run='priced-b'] input.pick")
    page.check("#runs tr[data-run='priced-a'] input.pick")
    page.click("#compare-button")
    page.wait_for_url(f"{url}/ui/compare/priced-a/priced-b")
    page.wait_for_selector("#headline-changes")
    regression = page.locator("#headline-changes tr.regression").first
    assert "Base" in regression.text_content() and "REGRESSION" in regression.text_content()
    assert "3 significant drop(s)" in page.locator("#regressions").text_content()
    assert page.locator("section.changed[data-arm='rag'] h3").text_content() == "RAG: 5 fixed, 0 broke"
    broke = page.locator("section.changed[data-arm='base'] tr.changed-row[data-row='k0'] pre")
    assert broke.nth(1).text_content() == "It costs $463." and broke.nth(2).text_content() == SCRIPT
    shot(page, "ui-compare.png")
    assert page.errors == []


def test_ask_the_arms_side_by_side(page, url):
    page.goto(f"{url}/ui/ask")
    page.wait_for_selector("#ask-form input.arm[value=rag]")
    page.fill("#question", "What does the P3 cost?")
    page.click("#ask-button")
    page.wait_for_selector("#ask-results .answer[data-arm='rag'] .passage", timeout=120_000)
    assert page.locator("#ask-results .answer").count() == 2
    assert "ms" in page.locator("#ask-results .answer[data-arm='base'] .latency").text_content()
    assert page.errors == []


def test_a_model_answer_holding_markup_renders_as_text(page, url):
    page.goto(f"{url}/ui/runs/priced-b?row=k0")
    page.wait_for_selector("#row-detail .answer[data-arm='base']")
    assert page.locator("#row-detail .answer[data-arm='base'] .answer-text").text_content() == SCRIPT
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img:not(.chart)").count() == 0
    page.goto(f"{url}/ui/compare/priced-a/priced-b")
    page.wait_for_selector("section.changed[data-arm='base']")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img").count() == 0


def test_with_api_keys_the_key_is_asked_once_kept_in_the_session_and_sent_as_bearer(stored_runs, browser):
    from ragft.service.settings import ApiSettings

    keyed = ApiSettings.model_validate(stored_runs.settings.api.model_dump() | {"api_keys": [KEY]})
    settings = stored_runs.settings.model_copy(update={"api": keyed})
    for base in serve(create_app(settings, stored_runs.corpus)):
        context = browser.new_context()
        page = context.new_page()
        sent = []

        def record(request, sent=sent):
            if "/v1/" in request.url:
                sent.append(request.headers.get("authorization"))

        page.on("request", record)
        page.goto(f"{base}/ui")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#key-input", KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#runs tr[data-run='priced-a']")
        page.click("#runs a:text('priced-a')")  # a new page in the same tab: the key is not asked again
        page.wait_for_selector("#row-count:text('20 rows')")
        assert page.locator("#key-form").is_hidden()
        assert page.evaluate("sessionStorage.getItem('ragft.apiKey')") == KEY
        assert context.cookies() == [] and page.evaluate("document.cookie") == ""
        bearer = f"Bearer {KEY}"
        assert sent[0] is None and bearer in sent and set(sent[sent.index(bearer) :]) == {bearer}  # then always
        context.close()


def test_a_reviewer_marks_an_answer_and_renders_the_reviewed_report(page, url):
    page.on("dialog", lambda dialog: dialog.accept("Ada"))  # the reviewer's name, asked once per tab
    page.goto(f"{url}/ui/runs/priced-b?row=k1")
    base = page.locator("#row-detail .answer[data-arm='base']")
    base.locator(".review-right").click()
    page.wait_for_selector("#row-detail .answer[data-arm='base'] .mark.reviewed")
    assert base.locator(".mark.wrong").count() == 1  # the measured mark stays beside the review
    assert "review: right" in base.locator(".mark.reviewed").text_content()
    page.wait_for_selector("#review-line:text('Reviewed: 1 answer(s)')")
    page.click("#render-reviewed")
    page.wait_for_selector("#review button.file:text('reviewed/report.html')", timeout=60_000)
    assert page.errors == []
