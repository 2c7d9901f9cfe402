"""One key cannot stall the server through the results routes (#36 item 5): a run is scored by one request at a
time (others share it), a running run is rescored at most every api.rescore_running_s, the scored runs kept stay
under api.scored_runs_mb, each key gets api.scoring_reads_per_minute, and the runs list counts answers in one
query. Also: a run read after its corpus's task files changed says so."""

import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient
from ragft.eval import store as store_module
from ragft.eval.store import Store
from ragft.eval.tasks import hash_tasks
from ragft.service.app.api.main import create_app
from ragft.service.app.api.routes import results

from tests.app.api.conftest import KEY
from tests.stored_runs import _answers, store_run


def _app(stored_runs, **api):
    settings = stored_runs.settings
    settings = settings.model_copy(update={"api": settings.api.model_copy(update=api)})
    return create_app(settings, stored_runs.corpus)


@pytest.fixture
def scorings(monkeypatch):
    """Every call of the real score_run the results routes make, counted; `hold` makes each wait for `release`."""
    calls = {"n": 0, "entered": threading.Event(), "release": threading.Event(), "hold": False}
    real = results.score_run

    def counted(*args, **kwargs):
        calls["n"] += 1
        calls["entered"].set()
        if calls["hold"]:
            assert calls["release"].wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(results, "score_run", counted)
    return calls


def test_concurrent_reads_of_one_run_share_one_scoring(stored_runs, scorings):
    scorings["hold"] = True
    with TestClient(_app(stored_runs)) as client:
        paths = ["/v1/results/priced-a/rows", "/v1/results/priced-a", "/v1/results/priced-a/rows/k1"] * 4
        answers = [None] * len(paths)

        def read(i):
            answers[i] = client.get(paths[i])

        threads = [threading.Thread(target=read, args=(i,)) for i in range(len(paths))]
        for t in threads:
            t.start()
        assert scorings["entered"].wait(30)
        time.sleep(1.0)  # every request has arrived and asked for the run while the first scoring is held
        scorings["release"].set()
        for t in threads:
            t.join(60)
    assert [a.status_code for a in answers] == [200] * len(paths)
    assert scorings["n"] == 1  # before: each of the 12 requests scored the run itself
    assert answers[0].json() == answers[3].json() and answers[0].headers["X-Total-Count"] == "20"


def test_a_running_run_is_rescored_at_most_every_rescore_running_s(stored_runs, scorings):
    settings, phrase = stored_runs.settings, stored_runs.settings.generation.abstention_phrase
    everything = _answers(lambda i: True, lambda i: True, phrase)
    store_run(settings, stored_runs.corpus, "running", {k: v for k, v in everything.items() if k[0] == "base"})
    store = Store(settings.database)
    store.set_status("running", "evaluating")
    with TestClient(_app(stored_runs, rescore_running_s=1.5)) as client:
        rows = lambda: client.get("/v1/results/running/rows", params={"arm": "rag"}).headers["X-Total-Count"]  # noqa: E731
        assert rows() == "0" and scorings["n"] == 1
        store_run(settings, stored_runs.corpus, "running", everything)  # the rag answers arrive
        store.set_status("running", "evaluating")
        for _ in range(5):  # the row browser's keystrokes within the interval: the last scoring serves them
            assert rows() == "0"
        assert scorings["n"] == 1  # before: a rescoring for every read once the count changed
        time.sleep(1.6)
        assert rows() == "20" and scorings["n"] == 2
        store.set_status("running", "done")  # finished: rescored at once, then never again
        assert rows() == "20" and scorings["n"] == 3
        assert rows() == "20" and scorings["n"] == 3
    store.close()


def test_the_scored_runs_kept_stay_under_their_byte_bound(stored_runs, scorings):
    with TestClient(_app(stored_runs)) as client:
        assert client.get("/v1/results/priced-a/rows").is_success
        one = client.app.state.scored_runs.nbytes
    assert 20_000 < one < 2_000_000  # 40 answers with their passages and scores
    bound_mb = 1.5 * one / 2**20  # room for one run, not two
    with TestClient(_app(stored_runs, scored_runs_mb=bound_mb)) as client:
        for run in ("priced-a", "priced-b", "priced-a", "priced-b"):
            assert client.get(f"/v1/results/{run}/rows").is_success
            assert client.app.state.scored_runs.nbytes <= bound_mb * 2**20
        assert client.app.state.scored_runs.scorings == 4  # each read found the other run in the one place
    with TestClient(_app(stored_runs, scored_runs_mb=0.01)) as client:  # smaller than one run: served, not kept
        assert client.get("/v1/results/priced-a/rows").headers["X-Total-Count"] == "20"
        assert client.app.state.scored_runs.nbytes == 0


def test_footprint_is_near_what_python_allocates(stored_runs):
    import gc
    import tracemalloc

    from ragft.eval.reporting.answers import row_views, score_run

    store = Store(stored_runs.settings.database)
    score_run(store, "priced-a", stored_runs.settings)  # imports and first-use caches outside the measurement
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    scored = score_run(store, "priced-b", stored_runs.settings)
    views = row_views(scored)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    store.close()
    assert 0.4 * held < results.footprint((scored, views)) < 2.5 * held


def test_the_key_past_its_reads_per_minute_gets_429_and_another_key_does_not(stored_runs, with_api):
    other = "another-key-0123456789"
    settings = with_api(api_keys=[KEY], read_only_keys=[other], scoring_reads_per_minute=3)
    settings = settings.model_copy(update={"eval": stored_runs.settings.eval, "corpus": stored_runs.corpus})
    with TestClient(create_app(settings, stored_runs.corpus)) as client:
        mine, theirs = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {other}"}
        for path in ("/v1/results/priced-a", "/v1/results/priced-a/rows", "/v1/compare/priced-a/priced-b"):
            assert client.get(path, headers=mine).status_code == 200
        refused = client.get("/v1/results/priced-a/rows/k1", headers=mine)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 20  # one request every 60/3 s
        assert "api.scoring_reads_per_minute" in refused.json()["detail"] and "retry in" in refused.json()["detail"]
        assert client.get("/v1/results/priced-a/rows/k1", headers=theirs).status_code == 200
        assert client.get("/v1/results", headers=mine).status_code == 200  # the runs list scores nothing


def test_the_runs_list_counts_answers_in_one_query(stored_runs, monkeypatch):
    statements: list[str] = []
    real = store_module.connect

    def traced(path, schema) -> sqlite3.Connection:
        conn = real(path, schema)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(store_module, "connect", traced)
    client = TestClient(_app(stored_runs))

    def queries() -> int:
        statements.clear()
        assert client.get("/v1/results").is_success
        return sum(s.lstrip().upper().startswith("SELECT") for s in statements)

    two = queries()
    phrase = stored_runs.settings.generation.abstention_phrase
    for i in range(10):
        store_run(
            stored_runs.settings, stored_runs.corpus, f"more-{i}", _answers(lambda i: True, lambda i: True, phrase)
        )
    assert len(client.get("/v1/results").json()) == 12
    assert queries() == two  # before: two more queries for each run (its record, its count)


def test_a_run_read_after_its_tasks_changed_says_so(stored_runs):
    store = Store(stored_runs.settings.database)
    store.update_meta("priced-a", tasks_hash=hash_tasks(stored_runs.corpus))
    store.close()
    with TestClient(_app(stored_runs)) as client:
        assert client.get("/v1/results/priced-a").json()["tasks_note"] is None
        tasks = stored_runs.corpus / "tasks" / "tasks.jsonl"
        tasks.write_text(tasks.read_text().replace('"answers": ["$463"]', '"answers": ["$464"]'))
        run = client.get("/v1/results/priced-a").json()  # the kept scoring is not served: the task files changed
        assert "changed after this run answered them" in run["tasks_note"] and "Rerun" in run["tasks_note"]
        assert client.get("/v1/results/priced-b").json()["tasks_note"] is None  # no tasks hash stored: nothing said


def test_a_served_results_json_names_no_server_folder(stored_runs, tiny_models):
    """results.json is downloaded by readers: its settings, spec and models name folders by their last name only."""
    client = TestClient(_app(stored_runs))
    text = client.get("/v1/results/priced-a/files/results.json").text
    for folder in (stored_runs.settings.data_dir, stored_runs.corpus, stored_runs.settings.eval.reports_dir,
                   *tiny_models):  # fmt: skip
        assert str(folder) not in text
    shown = client.get("/v1/results/priced-a/files/results.json").json()
    assert shown["config"]["settings"]["data_dir"] == "data" and shown["config"]["spec"]["corpus"] == "priced"
    assert (
        shown["models"]["generator"] == "generator" and shown["config"]["settings"]["eval"]["reports_dir"] == "reports"
    )


@pytest.mark.parametrize("name", ["A\u200bda", "Ada\u2066x\u2069", "Ada \u202eevil", "Ada\u00adL", "A" * 81])
def test_generated_rows_refuse_the_reviewer_names_answer_marks_refuse(stored_runs, settings, corpus, name):
    """One check of a reviewer's name (ragft.eval.reporting.review.reviewer_name) for answer marks and generated rows alike."""
    import json

    from ragft.eval.corpus.generation_rows import GENERATED_FILE, read_generated

    from tests.app.api.routes.test_generated import ROWS

    (corpus / "tasks" / GENERATED_FILE).write_text("".join(json.dumps(r | {"review": {"status": "pending"}}) + "\n"
                                                          for r in ROWS))  # fmt: skip
    generated = TestClient(create_app(settings, corpus)).put(
        f"/v1/corpora/{corpus.name}/generated/gen-k-0000000001", json={"decision": "accept", "reviewer": name}
    )
    marked = TestClient(_app(stored_runs)).put("/v1/results/priced-b/reviews/base/k1",
                                               json={"correct": True, "reviewer": name})  # fmt: skip
    assert generated.status_code == marked.status_code == 422
    if len(name) <= 80:
        assert "invisible or control character" in generated.json()["detail"]
        assert generated.json()["detail"] == marked.json()["detail"]
    assert all(r.review.status == "pending" for r in read_generated(corpus / "tasks" / GENERATED_FILE))
