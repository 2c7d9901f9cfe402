import time

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app


def wait_for(client, job_id, statuses, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/curves/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"curve {job_id} stayed {job['status']}: {job}")


def test_a_curve_job_runs_like_ragft_curve_and_its_report_downloads(settings, full_corpus):
    settings = settings.model_copy(update={"eval": settings.eval.model_copy(update={"reports_dir": settings.data_dir
                                                                                    / "reports"})})  # fmt: skip
    body = {"arms": ["base", "lora"], "families": ["behaviour"], "rows": [1, "all"]}
    with TestClient(create_app(settings, full_corpus)) as client:
        started = client.post("/v1/curves", json=body)
        assert started.status_code == 202 and started.json()["id"].startswith("curve-")
        job = wait_for(client, started.json()["id"], {"done", "failed"})
        assert job["status"] == "done", job
        assert job["run_id"].startswith("corpus-curve-")
        assert "eta_s" in job["progress"]  # the curve's time-left estimate travels with its progress
        results = client.get(f"/v1/curves/{job['id']}/report.json").json()
        assert results["curve_id"] == job["run_id"] and set(results["families"]) == {"behaviour"}
        assert client.get(f"/v1/curves/{job['id']}/report.md").text.startswith("# ragft curve")
        assert client.get(f"/v1/curves/{job['id']}/report").headers["content-type"].startswith("text/html")
        assert [j["id"] for j in client.get("/v1/curves").json()] == [job["id"]]
        assert client.post("/v1/curves", json={"arms": ["base", "rag"]}).status_code == 422  # nothing learns
        assert client.post("/v1/curves", json={"arms": ["lora"], "noise": [1.0]}).status_code == 422


@pytest.mark.parametrize("seed", [-1, 2**31, 2**63])
def test_a_curve_seed_out_of_range_is_refused_before_it_runs(settings, corpus, seed):
    client = TestClient(create_app(settings, corpus))  # no lifespan: a refused request queues nothing either way
    r = client.post("/v1/curves", json={"arms": ["lora"], "seed": seed})
    assert r.status_code == 422 and "seed" in r.text
    assert client.get("/v1/curves").json() == []


def test_ragft_curve_and_eval_check_the_seed_before_answering(settings, corpus):
    from ragft.eval.curve_spec import CurveSpec
    from ragft.eval.spec import SEED_MAX, RunSpec

    for resolve in (RunSpec.resolve, CurveSpec.resolve):
        with pytest.raises(ValueError, match=f"from 0 to {SEED_MAX}"):
            resolve(settings, corpus, arms=["lora"], seed=-1)
