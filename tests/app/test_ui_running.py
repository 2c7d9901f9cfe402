"""A running run's figures on the runs page, in a real headless Chromium (as tests/app/test_ui.py drives it): a run
over HTTP on the tiny models shows each family's provisional figures while its adapter has yet to train, then each
family's final verdict while the run still goes on, and neither once it is done. Skips without a chromium binary."""

import threading

import httpx
import pytest
from ragft.eval.reporting.report import verdict_rows
from ragft.eval.running import runner
from ragft.service.app.api import jobs
from ragft.service.app.api.main import create_app

from tests.app.test_ui import CHROMIUM, serve, shot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
WAIT_MS = 120_000


@pytest.fixture
def gates(monkeypatch):
    """The run held before training and before its report, so the page can be read at both moments."""
    held = {"train": threading.Event(), "report": threading.Event()}
    real_train, real_publish = runner.train_artifacts, jobs.publish_run

    def train_artifacts(*args, **kwargs):
        assert held["train"].wait(WAIT_MS / 1000), "the test never let training start"
        return real_train(*args, **kwargs)

    def publish_run(*args, **kwargs):
        assert held["report"].wait(WAIT_MS / 1000), "the test never let the report be written"
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "train_artifacts", train_artifacts)
    monkeypatch.setattr(jobs, "publish_run", publish_run)
    yield held
    for gate in held.values():  # a failed test still lets the worker finish
        gate.set()


@pytest.fixture
def url(settings, full_corpus, gates):
    yield from serve(create_app(settings, full_corpus))


@pytest.fixture
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        yield page
        browser.close()


def test_a_running_run_shows_provisional_figures_then_each_final_verdict(page, url, gates):
    job = httpx.post(f"{url}/v1/runs", json={"arms": ["base", "rag", "lora"], "families": ["knowledge", "abstention"]})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    page.goto(f"{url}/ui")

    # 1. the untrained arms have answered, the adapter waits to train: provisional figures, no verdict
    for family in ("knowledge", "abstention"):
        page.wait_for_selector(f"#figures-so-far tr.figure.provisional[data-family='{family}']", timeout=WAIT_MS)
    assert page.locator("#figures-so-far .running").get_attribute("data-run") == job_id  # no run id before training
    knowledge = page.locator("#figures-so-far tr.figure[data-family='knowledge']")
    assert knowledge.locator(".state").text_content() == "provisional, 4 rows so far"
    assert [c.get_attribute("data-arm") for c in knowledge.locator(".cell").all()] == ["base", "rag"]
    assert knowledge.locator(".verdict").text_content() == "no verdict yet: LoRA still to answer"
    shot(page, "ui-running-provisional.png")
    progress = httpx.get(f"{url}/v1/runs/{job_id}").json()["progress"]
    assert progress["figures"]["knowledge"]["status"] == "provisional"  # the same figures through the API

    # 2. every arm has answered each family, the report is not written yet: each family's final verdict
    gates["train"].set()
    for family in ("knowledge", "abstention"):
        page.wait_for_selector(f"#figures-so-far tr.figure.final[data-family='{family}']", timeout=WAIT_MS)
    run_id = httpx.get(f"{url}/v1/runs/{job_id}").json()["run_id"]
    assert page.locator("#figures-so-far .running").get_attribute("data-run") == run_id  # the run, named by now
    assert knowledge.locator(".state").text_content() == "final, 4 rows"
    assert [c.get_attribute("data-arm") for c in knowledge.locator(".cell").all()] == ["base", "rag", "lora"]
    verdict = httpx.get(f"{url}/v1/runs/{job_id}").json()["progress"]["figures"]["knowledge"]["verdict"]
    assert knowledge.locator(".verdict").text_content() == f"{verdict['recommended']} (best {verdict['best']})"
    assert page.locator("#figures-so-far tr.figure.provisional").count() == 0
    shot(page, "ui-running-final.png")

    # 3. done: the figures give way to the run's report
    gates["report"].set()
    page.wait_for_selector("#runs tr[data-run] .status:text('done')", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    assert page.locator("#figures-so-far").count() == 0
    report = httpx.get(f"{url}/v1/runs/{job_id}/report.json").json()
    shown = httpx.get(f"{url}/v1/runs/{job_id}").json()["progress"]["figures"]
    for family, row in {v["family"]: v for v in verdict_rows(report)}.items():  # the verdict shown early is final
        assert shown[family]["verdict"] == row, family
    assert page.errors == []
