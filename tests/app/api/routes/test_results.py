"""/v1/results, /v1/compare and the /ui shell: stored runs read back, behind the API key like every /v1 route."""

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app

from tests.app.api.conftest import KEY
from tests.stored_runs import SCRIPT


@pytest.fixture
def client(stored_runs):
    with TestClient(create_app(stored_runs.settings, stored_runs.corpus)) as c:
        yield c


def test_runs_list_rows_and_one_row(client, stored_runs):
    runs = client.get("/v1/results").json()
    assert [r["id"] for r in runs] == ["priced-b", "priced-a"]  # newest first
    assert runs[0]["arms"] == ["base", "rag"] and runs[0]["answers"] == runs[0]["planned_answers"] == 40
    assert runs[0]["reports"]["report.html"] and not runs[0]["reports"]["reviewed/report.html"]
    run = client.get("/v1/results/priced-a").json()
    assert run["verdicts"][0]["family"] == "knowledge" and run["rows"] == 20
    assert run["families"] == ["knowledge", "knowledge_unseen", "abstention"]
    assert all(src.startswith("data:image/png;base64,") for src in run["charts"].values()) and run["charts"]
    page = client.get("/v1/results/priced-a/rows", params={"disagree": True, "limit": 3, "offset": 1})
    assert page.headers["X-Total-Count"] == "10" and [r["id"] for r in page.json()] == ["a2", "a4", "a6"]
    assert "passages" not in page.json()[0]["answers"][0]  # passages come with one row
    row = client.get("/v1/results/priced-a/rows/k0").json()
    rag = row["answers"][1]
    assert (rag["arm"], rag["outcome"], rag["scores"]["answer_contained"]) == ("rag", "wrong", 0.0)
    assert rag["passages"][0]["pieces"] == [["# Product P0\n\nThe P0 costs ", False], ["$463", True], [".", False]]
    assert client.get("/v1/results/priced-b/rows", params={"q": "<script>"}).json()[0]["answers"][0]["text"] == SCRIPT
    assert client.get("/v1/results/nope/rows").status_code == 404
    assert client.get("/v1/results/priced-a/rows/zz").status_code == 404
    assert client.get("/v1/results/priced-a/files/report.md").text.startswith("# ragft report")
    # traversal, sent as the raw path: httpx would normalise a plain '../..' away before it left the client
    secret = stored_runs.settings.eval.reports_dir.parent / "secret"
    secret.write_text("not a report")
    for raw in ("/v1/results/priced-a/files/%2E%2E/%2E%2E/secret", "/v1/results/priced-a/files/..%2F..%2Fsecret",
                "/v1/results/priced-a/files/reviewed/..%2F..%2F..%2Fsecret"):  # fmt: skip
        refused = client.get(raw)
        assert refused.status_code in (404, 422) and "not a report" not in refused.text, raw
    assert "no report file" in client.get("/v1/results/priced-a/files/%2E%2E/%2E%2E/secret").json()["detail"]


def test_compare_gives_paired_changes_and_changed_rows(client):
    out = client.get("/v1/compare/priced-a/priced-b").json()
    base = next(c for c in out["headline_changes"] if (c["family"], c["arm"]) == ("knowledge", "base"))
    assert base["regression"] and base["difference"] == -1.0 and base["ci_high"] < 0 and out["regressions"] == 3
    assert (out["changed_rows"]["rag"]["fixed"], out["changed_rows"]["rag"]["broke"]) == (5, 0)
    broke = out["changed_rows"]["base"]["rows"][0]
    assert (broke["id"], broke["change"], broke["before"], broke["after"]) == ("k0", "broke", "It costs $463.", SCRIPT)


def test_reviews_are_stored_apart_and_render_a_reviewed_report(client, stored_runs):
    path = "/v1/results/priced-b/reviews/base/k1"
    assert client.put(path, json={"correct": True, "reviewer": ""}).status_code == 422
    assert (
        client.put("/v1/results/priced-b/reviews/lora/k1", json={"correct": True, "reviewer": "Ada"}).status_code == 404
    )
    assert client.post("/v1/results/priced-b/reviewed-report").status_code == 409  # nothing reviewed yet
    assert client.put(path, json={"correct": True, "reviewer": "Ada"}).json()["reviewer"] == "Ada"
    row = client.get("/v1/results/priced-b/rows/k1").json()
    base = row["answers"][0]
    assert base["review"]["correct"] and base["outcome"] == "wrong"  # the measured mark stands beside the review
    out = client.post("/v1/results/priced-b/reviewed-report").json()
    assert out["review"]["answers_overridden"] == 1 and out["review"]["by"] == {"Ada": 1}
    assert client.get(out["files"]["report.html"]).status_code == 200
    assert client.get("/v1/results/priced-b").json()["review"]["line"].startswith("Reviewed: 1 answer(s)")
    marks = client.get("/v1/results/priced-b/reviews").json()
    assert marks["summary"]["by"] == {"Ada": 1} and [m["row_id"] for m in marks["marks"]] == ["k1"]
    measured = client.get("/v1/results/priced-b/files/results.json").json()
    assert measured["families"]["knowledge"]["arms"]["base"]["answer_contained"]["value"] == 0.0
    assert client.delete(path).status_code == 204 and client.get("/v1/results/priced-b").json()["review"] is None


def test_every_route_needs_the_key_and_the_shell_sets_a_content_security_policy(stored_runs, with_api):
    settings = with_api(api_keys=[KEY])
    settings = settings.model_copy(update={"eval": stored_runs.settings.eval, "corpus": stored_runs.corpus})
    with TestClient(create_app(settings, stored_runs.corpus)) as client:
        for path in ["/v1/results", "/v1/results/priced-a", "/v1/results/priced-a/rows", "/v1/compare/priced-a/priced-b",
                     "/v1/results/priced-a/files/report.html"]:  # fmt: skip
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, path
        assert (
            client.put("/v1/results/priced-a/reviews/base/k0", json={"correct": True, "reviewer": "x"}).status_code
            == 401
        )
        for path in ["/ui", "/ui/runs/priced-a", "/ui/compare/priced-a/priced-b", "/ui/ask", "/ui/static/app.js"]:
            page = client.get(path)  # the shell holds no data: it loads without a key and asks for one
            assert page.status_code == 200, path
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "set-cookie" not in page.headers
        assert client.get("/ui/static/other.js").status_code == 404
        assert client.get("/ui/runs/..%2F..%2Fetc").status_code in (404, 422)
        script = client.get("/ui/static/app.js").text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "srcdoc",
                     "createContextualFragment", "DOMParser", "eval(", "new Function"):  # fmt: skip
            assert sink not in script, sink  # every stored string goes in as text, never parsed as HTML or code


def test_the_runs_list_shows_a_running_jobs_progress_and_eta(stored_runs):
    client = TestClient(create_app(stored_runs.settings, stored_runs.corpus))  # no worker: the test sets the states
    jobs = client.app.state.jobs.store
    jobs.add_job("run-0123456789ab", "eval", {"corpus": "priced", "arms": ["base", "rag"], "families": ["knowledge"]})
    jobs.add_job("run-ba9876543210", "eval", {"corpus": "priced", "arms": ["base"], "families": ["knowledge"]})
    jobs.set_run_id("run-0123456789ab", "priced-b")
    jobs.update_job("run-0123456789ab", "evaluating", progress={"stage": "answer rag", "done": 30, "total": 40,
                                                                 "eta_s": 262})  # fmt: skip
    jobs.update_job("run-ba9876543210", "training", progress={"stage": "train lora", "done": 1, "total": 3})
    runs = {r["id"]: r for r in client.get("/v1/results").json()}
    assert list(runs) == ["run-ba9876543210", "priced-b", "priced-a"]  # a job with no run yet comes first
    assert runs["priced-b"]["status"] == "evaluating" and runs["priced-b"]["job"]["progress"]["eta_s"] == 262
    assert runs["run-ba9876543210"]["job"]["progress"]["stage"] == "train lora" and runs["priced-a"]["job"] is None


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("A" * 80, 200),
        ("A" * 81, 422),
        ("Ada \u202eevil.exe", 422),  # a right-to-left override reorders what report.md shows
        ("A\u200bda", 422),  # a zero-width space: two names that look the same
        ("Ada\u2066x\u2069", 422),
        ("Ada\nLovelace", 200),  # whitespace is folded to one space
    ],
)
def test_reviewer_names_are_plain_text_of_at_most_80_characters(client, name, status):
    r = client.put("/v1/results/priced-b/reviews/base/k1", json={"correct": True, "reviewer": name})
    assert r.status_code == status, r.text
    if status == 422 and len(name) <= 80:
        assert "invisible or control character" in r.text
    if status == 200:
        assert r.json()["reviewer"] == " ".join(name.split())


def test_a_reviewed_report_is_not_rendered_for_another_sites_page_nor_twice_at_once(client, monkeypatch):
    """A bodiless POST is a request any page can make (no CORS preflight): on a server without keys a visited site
    could start renders, and nothing stopped two at once."""
    import threading

    from ragft.service.app.api.routes import results

    assert client.put("/v1/results/priced-b/reviews/base/k1", json={"correct": True, "reviewer": "Ada"}).is_success
    url = "/v1/results/priced-b/reviewed-report"
    for headers in ({"Origin": "https://elsewhere.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = client.post(url, headers=headers)
        assert refused.status_code == 403 and "another site" in refused.json()["detail"]
    assert client.post(url, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}).is_success

    entered, release = threading.Event(), threading.Event()
    real = results.publish_reviewed

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(results, "publish_reviewed", slow)
    first = threading.Thread(target=lambda: client.post(url))
    first.start()
    assert entered.wait(30)
    second = client.post(url)
    release.set()
    first.join(60)
    assert second.status_code == 409 and second.headers["retry-after"] and "being rendered" in second.text


def test_errors_in_the_runs_list_hide_the_servers_folders(stored_runs):
    client = TestClient(create_app(stored_runs.settings, stored_runs.corpus))  # no worker: the test sets the states
    jobs = client.app.state.jobs.store
    jobs.add_job("run-0123456789ab", "eval", {"corpus": "priced", "arms": ["base"], "families": ["knowledge"]})
    folder = stored_runs.settings.data_dir
    jobs.update_job("run-0123456789ab", "training", error=f"OSError: {folder}/results.db: disk I/O error")
    jobs.add_job("run-ba9876543210", "eval", {"corpus": "priced", "arms": ["rag"], "families": ["knowledge"]})
    jobs.set_run_id("run-ba9876543210", "priced-a")
    jobs.update_job("run-ba9876543210", "evaluating", error=f"FileNotFoundError: {stored_runs.corpus}/tasks/x.jsonl")
    text = client.get("/v1/results").text
    assert str(folder) not in text and str(stored_runs.corpus) not in text and "x.jsonl" in text
    listed = {r["id"]: r for r in client.get("/v1/results").json()}
    assert listed["priced-a"]["job"]["error"] == "FileNotFoundError: <corpus priced>/tasks/x.jsonl"
    assert listed["run-0123456789ab"]["error"] == "OSError: <data_dir>/results.db: disk I/O error"
