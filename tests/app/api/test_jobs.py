"""The job worker: each job runs once, whatever stops, fails or is cancelled around it."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api import jobs
from ragft.service.app.api.job_store import JobStore
from ragft.service.app.api.jobs import JobWorker
from ragft.service.app.api.main import create_app

ROOT = Path(__file__).resolve().parents[3]
TRAIN = {"arms": ["lora"]}  # a request each test makes distinct with "force"


def settle(read, want, timeout=30.0):
    """Poll `read()` until it equals `want` (or the timeout); returns the last value."""
    deadline = time.time() + timeout
    while (value := read()) != want and time.time() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def recorded(monkeypatch):
    """Jobs 'run' by recording which worker ran them; a job whose id is in `hold` waits until it is released."""
    runs: list[tuple[str, str]] = []
    entered, release = threading.Event(), threading.Event()

    def run(self, job):
        runs.append((job.id, str(id(self))))
        entered.set()
        assert release.wait(30), "never released"

    monkeypatch.setattr(JobWorker, "_run", run)
    return runs, entered, release


def test_two_servers_on_one_data_folder_run_each_job_exactly_once(settings, corpus, recorded, caplog):
    """Server B starts while server A runs a job: B used to queue that job again and run it beside A. Now A holds
    the folder's worker lock, B says so and stands by, the jobs B queues run on A, and B takes over when A stops."""
    runs, entered, release = recorded
    a, b = create_app(settings, corpus), create_app(settings, corpus)
    with TestClient(a) as first:
        running = first.post("/v1/adapters", json=TRAIN).json()["id"]
        assert entered.wait(30)
        with TestClient(b) as second:
            queued_on_b = [second.post("/v1/adapters", json=TRAIN | {"force": True}).json()["id"],
                           second.post("/v1/runs", json={"limit": 1}).json()["id"]]  # fmt: skip
            release.set()
            for job_id in [running, *queued_on_b]:
                assert settle(lambda j=job_id: first.get(f"/v1/runs/{j}").json()["status"], "done") == "done"
            assert [job for job, _ in runs] == [running, *queued_on_b]  # each once, in order
            assert {worker for _, worker in runs} == {str(id(a.state.jobs))}  # all on A, which holds the lock
            assert "runs the jobs of" in caplog.text and "takes over when it stops" in caplog.text
            assert second.get("/readyz").json()["jobs"] == "standby"
    assert b.state.jobs.state == "stopped"

    # A stops: B (started again here) runs what is queued next, and nothing A finished again
    with TestClient(create_app(settings, corpus)) as second:
        later = second.post("/v1/adapters", json=TRAIN).json()["id"]
        assert settle(lambda: second.get(f"/v1/runs/{later}").json()["status"], "done") == "done"
    assert [job for job, _ in runs] == [running, *queued_on_b, later]


def test_a_failing_status_write_is_logged_and_the_worker_goes_on(settings, corpus, monkeypatch):
    """With the disk full the final status write raised and the `ragft-jobs` thread died: every later job stayed
    queued for ever and /readyz still said ready. Now the error is counted, the outcome written when it can be."""
    armed, runs = threading.Event(), []
    monkeypatch.setattr(JobWorker, "_run", lambda self, job: runs.append(job.id) or (len(runs) == 1 and armed.set()))
    app = create_app(settings, corpus)
    with TestClient(app) as client:
        store = app.state.jobs.store
        real = store._conn

        class DiskFull:  # the next status write fails as SQLite fails on a full disk, once
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, *args):
                if armed.is_set() and sql.lstrip().upper().startswith("UPDATE JOBS SET STATUS"):
                    armed.clear()
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)

        store._conn = DiskFull()
        first = client.post("/v1/adapters", json=TRAIN).json()["id"]
        assert settle(lambda: bool(runs) and not armed.is_set(), True)  # the job ran; recording its end failed
        second = client.post("/v1/adapters", json=TRAIN | {"force": True}).json()["id"]
        for job_id in (first, second):
            assert settle(lambda j=job_id: client.get(f"/v1/runs/{j}").json()["status"], "done") == "done", job_id
        assert runs == [first, second]
        ready = client.get("/readyz").json()
        assert ready["job_worker_alive"] and ready["jobs"] == "running" and "disk is full" in ready["job_worker_error"]
        metrics = client.get("/metrics").text
        assert "ragft_job_worker_up 1.0" in metrics and "ragft_job_worker_errors_total 1.0" in metrics
        store._conn = real


def test_readyz_and_metrics_say_when_the_worker_thread_has_died(settings, corpus, monkeypatch):
    monkeypatch.setattr(JobWorker, "_loop", lambda self: None)  # the thread ends at once, as a crash would end it
    with TestClient(create_app(settings, corpus)) as client:
        settle(lambda: client.app.state.jobs.state, "dead")
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["job_worker_alive"] is False and ready.json()["jobs"] == "dead"
        assert "ragft_job_worker_up 0.0" in client.get("/metrics").text


def test_a_delete_just_after_the_worker_took_the_job_cancels_it(settings, corpus, monkeypatch):
    """The DELETE found the job still 'queued' (the worker had read it, not yet written), marked it cancelled, and
    the job's first progress write overwrote that: the run went on to 'done'."""
    entered, release = threading.Event(), threading.Event()
    real_run_eval = jobs.run_eval

    def gated(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real_run_eval(*args, **kwargs)

    monkeypatch.setattr(jobs, "run_eval", gated)
    with TestClient(create_app(settings, corpus)) as client:
        job_id = client.post("/v1/runs", json={"arms": ["base"], "families": ["knowledge"], "limit": 2}).json()["id"]
        assert entered.wait(30)
        deleted = client.delete(f"/v1/runs/{job_id}").json()
        assert deleted["status"] == "training" and deleted["cancel_requested"]  # taken: it stops at its next batch
        release.set()
        final = settle(lambda: client.get(f"/v1/runs/{job_id}").json()["status"], "cancelled")
        time.sleep(0.5)  # anything still running would overwrite it now
        assert final == "cancelled" and client.get(f"/v1/runs/{job_id}").json()["status"] == "cancelled"


def test_a_delete_then_a_restart_does_not_resume_the_job(settings, corpus, monkeypatch):
    """The cancel lived in the process's memory: the shutdown marked the job 'interrupted' and the next start ran it
    to the end. It is stored now, so the job stays cancelled."""
    entered, release = threading.Event(), threading.Event()
    calls = []
    real_run_eval = jobs.run_eval

    def gated(*args, **kwargs):
        calls.append(1)
        entered.set()
        assert release.wait(30)
        return real_run_eval(*args, **kwargs)

    monkeypatch.setattr(jobs, "run_eval", gated)
    with TestClient(create_app(settings, corpus)) as client:
        job_id = client.post("/v1/runs", json={"arms": ["base"], "families": ["knowledge"], "limit": 2}).json()["id"]
        assert entered.wait(30)
        client.delete(f"/v1/runs/{job_id}")
        threading.Timer(0.5, release.set).start()  # the job notices at its next batch, once the shutdown began
    assert JobStore(settings.database).job(job_id).status == "cancelled"
    with TestClient(create_app(settings, corpus)) as client:
        time.sleep(jobs.POLL_S + 0.5)
        assert client.get(f"/v1/runs/{job_id}").json()["status"] == "cancelled" and calls == [1]


def child(code: str, settings, corpus: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with `settings`, `corpus`, create_app and TestClient bound."""
    prelude = textwrap.dedent("""
        import os, signal, sys, time
        from pathlib import Path
        from fastapi.testclient import TestClient
        from ragft.service.app.api.jobs import JobWorker
        from ragft.service.app.api.main import create_app
        from ragft.service.settings import Settings
        settings = Settings.model_validate_json(sys.argv[1])
        corpus = Path(sys.argv[2])
    """)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), settings.model_dump_json(), str(corpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


KILLED_IN_JOB = """
    JobWorker._run = lambda self, job: os.kill(os.getpid(), signal.SIGKILL)  # out of memory, mid-job
    with TestClient(create_app(settings, corpus)) as client:
        {submit}
        time.sleep(60)
"""


def test_a_job_that_kills_its_server_is_resumed_by_the_next_and_failed_after_three(settings, corpus, recorded):
    """A job that took its process down (OOM) was queued again at every start, with no count: a crash loop. The
    next worker resumes it (its claim died with its process), and after MAX_ATTEMPTS such ends it is failed with
    the reason."""
    runs, entered, release = recorded
    release.set()
    api = settings.api.model_copy(update={"warm_up": False})
    settings = settings.model_copy(update={"api": api})
    submit = 'client.post("/v1/adapters", json={"arms": ["lora"]})'
    for attempt in range(jobs.MAX_ATTEMPTS):
        killed = child(KILLED_IN_JOB.format(submit=submit if attempt == 0 else "pass"), settings, corpus)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    (job,) = JobStore(settings.database).jobs()
    assert job.status in ("training", "queued") and job.attempts == jobs.MAX_ATTEMPTS
    with TestClient(create_app(settings, corpus)) as client:
        shown = settle(lambda: client.get(f"/v1/adapters/{job.id}").json()["status"], "failed")
        assert shown == "failed" and runs == []  # not started a fourth time
        error = client.get(f"/v1/adapters/{job.id}").json()["error"]
        assert f"stopped before it ended {jobs.MAX_ATTEMPTS} times" in error and "memory" in error


def test_a_job_whose_server_was_killed_once_is_resumed_by_the_next_server(settings, corpus, recorded):
    runs, entered, release = recorded
    release.set()
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"warm_up": False})})
    killed = child(KILLED_IN_JOB.format(submit='client.post("/v1/adapters", json={"arms": ["lora"]})'), settings,
                   corpus)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (job,) = JobStore(settings.database).jobs()
    with TestClient(create_app(settings, corpus)) as client:
        assert settle(lambda: client.get(f"/v1/adapters/{job.id}").json()["status"], "done") == "done"
        done = client.get(f"/v1/adapters/{job.id}").json()
        assert done["progress"].get("resumed") and [j for j, _ in runs] == [job.id]


def test_an_eval_job_releases_the_conversions_it_loaded_and_keeps_the_servers(settings, corpus, monkeypatch):
    """#36 item 8: each sibling-corpus or seed run kept ~514 MB of converted adapters until restart."""
    from ragft.service import engine_ct2

    loaded = {("served-adapter",)}
    released = []
    monkeypatch.setattr(engine_ct2, "loaded_artifacts", lambda: set(loaded))
    monkeypatch.setattr(engine_ct2, "release", lambda keys: released.append(set(keys)) or len(keys))

    def run_eval(settings, spec, **_):
        loaded.add(("run-adapter",))  # the run converts an adapter of its own
        raise RuntimeError("the run fails after loading it")  # released whatever way the run ends

    monkeypatch.setattr(jobs, "run_eval", run_eval)
    with TestClient(create_app(settings, corpus)) as client:
        job = client.post("/v1/runs", json={"limit": 1}).json()["id"]
        assert settle(lambda: client.get(f"/v1/runs/{job}").json()["status"], "failed") == "failed"
    assert released == [{("run-adapter",)}]
