"""The review page in a real headless Chromium (as tests/app/test_ui.py drives it): generated rows beside their
spans, one accepted, one edited and one rejected from the keyboard, and a run then counts exactly those decided
for. Skips without a chromium binary."""

import json

import pytest
from ragft.eval.corpus.generation_rows import GENERATED_FILE, read_generated
from ragft.eval.tasks import load_tasks
from ragft.service.app.api.main import create_app

from tests.app.api.routes.test_generated import ROWS
from tests.app.test_ui import CHROMIUM, serve, shot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
SECOND = [
    {"id": "gen-k-0000000003", "family": "knowledge", "split": "train", "question": "How much does the K2 weigh?",
     "answers": ["300 grams"], "source_docs": ["kestrel-k2"],
     "generated": {"model": "scripted", "prompt_version": "knowledge-1", "item": "gen-k-0000000003",
                   "source_doc": "kestrel-k2", "span": "The Kestrel K2 router costs $249 and weighs 300 grams."}},
    {"id": "gen-k-0000000003-p", "family": "knowledge", "split": "test", "kind": "paraphrase",
     "paraphrase_of": "gen-k-0000000003", "question": "What is the weight of a Kestrel K2?",
     "answers": ["300 grams"], "source_docs": ["kestrel-k2"],
     "generated": {"model": "scripted", "prompt_version": "knowledge-1", "item": "gen-k-0000000003",
                   "source_doc": "kestrel-k2", "span": "The Kestrel K2 router costs $249 and weighs 300 grams."}},
]  # fmt: skip


@pytest.fixture
def url(settings, corpus):
    rows = [r | {"review": {"status": "pending"}} for r in [*ROWS, *SECOND]]
    (corpus / "tasks" / GENERATED_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    yield from serve(create_app(settings, corpus))


@pytest.fixture
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        yield page
        browser.close()


def test_accept_edit_and_reject_from_the_keyboard_then_a_run_counts_exactly_those(page, url, corpus):
    page.goto(f"{url}/ui/review")
    page.wait_for_selector(".item[data-item='gen-k-0000000001'].current")
    assert page.locator("button.family[data-family='knowledge']").text_content() == "knowledge: 2 pending"
    first = page.locator(".item[data-item='gen-k-0000000001']")
    assert first.locator("blockquote.span").text_content() == "Its firmware version is 1.2.3."
    assert first.locator("blockquote.span mark").text_content() == "1.2.3"  # the answer, marked in its span
    assert first.locator("textarea[name=paraphrase]").input_value() == "Which firmware does the Kestrel K4 run?"
    page.fill("#reviewer", "")
    page.locator("#reviewer").type("Ada")  # typing an 'a' in the name field accepts nothing
    assert page.locator(".item").count() == 2
    page.locator("h1").click()  # leave the name field: the keys below go to the page
    shot(page, "ui-review.png")
    page.keyboard.press("a")  # accept the first item
    page.wait_for_selector("#review-status:text('gen-k-0000000001: accepted by Ada')")
    page.wait_for_selector(".item[data-item='gen-k-0000000003'].current")
    page.keyboard.press("e")  # edit the second: its first field has focus
    page.fill(".item.current textarea[name=paraphrase]", "How heavy is a Kestrel K2?")
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-status:text('gen-k-0000000003: edited by Ada')")
    page.wait_for_selector("#no-items")
    page.click("button.family[data-family='abstention']")
    page.wait_for_selector(".item[data-item='gen-n-0000000002'].current")
    page.keyboard.press("r")
    page.wait_for_selector("#review-status:text('gen-n-0000000002: rejected by Ada')")
    assert not page.errors, page.errors
    counted = {r.id: r for r in load_tasks(corpus)}
    generated = {i for i in counted if i.startswith("gen-")}
    assert generated == {"gen-k-0000000001", "gen-k-0000000001-p", "gen-k-0000000003", "gen-k-0000000003-p"}
    assert counted["gen-k-0000000003-p"].text == "How heavy is a Kestrel K2?"
    stored = {r.id: r.review for r in read_generated(corpus / "tasks" / GENERATED_FILE)}
    assert [stored[i].status for i in ("gen-k-0000000001", "gen-k-0000000003", "gen-n-0000000002")] == [
        "accepted", "edited", "rejected"]  # fmt: skip
    assert {s.reviewer for s in stored.values()} == {"Ada"}
