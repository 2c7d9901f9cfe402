import threading
import time

import pytest
from ragft.service.app.api.job_store import JobStore, QueueFull
from ragft.service.app.api.jobs import JobWorker


def test_concurrent_submissions_never_pass_max_queued_jobs(settings, monkeypatch):
    """The duplicate check, the count and the insert are one transaction: eight POSTs at once with room for two
    queue two and refuse six (check-then-insert let all eight in)."""
    capped = settings.model_copy(update={"api": settings.api.model_copy(update={"max_queued_jobs": 2})})
    worker = JobWorker(capped)  # not started: nothing takes jobs off the queue
    same_request = JobStore.same_request

    def slow_same_request(self, kind, request):
        time.sleep(0.05)  # widen the window between the checks and the insert
        return same_request(self, kind, request)

    monkeypatch.setattr(JobStore, "same_request", slow_same_request)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def submit(i: int) -> None:
        start.wait()
        try:
            worker.submit("train", {"corpus": "c", "kinds": [f"k{i}"], "force": False})
            outcomes.append("queued")
        except QueueFull:
            outcomes.append("full")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["full"] * 6 + ["queued"] * 2
    assert sum(n for (_, status), n in worker.store.job_counts().items() if status == "queued") == 2
    worker.store.close()


def test_a_repeated_request_returns_the_waiting_job(settings):
    store = JobStore(settings.database)
    first, new = store.add_job("train-1", "train", {"kinds": ["lora"]}, max_queued=1)
    again, new_again = store.add_job("train-2", "train", {"kinds": ["lora"]}, max_queued=1)
    assert new and not new_again and again.id == first.id
    with pytest.raises(QueueFull, match="api.max_queued_jobs=1"):
        store.add_job("train-3", "train", {"kinds": ["rag_lora"]}, max_queued=1)
    store.close()


def test_two_workers_claiming_at_once_each_get_different_jobs(settings):
    """Two servers on one database (two stores, two connections) claim in a loop: each job is claimed once."""
    stores = [JobStore(settings.database) for _ in range(2)]
    for i in range(20):
        stores[0].add_job(f"train-{i}", "train", {"kinds": [f"k{i}"]})
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def claim(name: str, store: JobStore) -> None:
        start.wait()
        while (job := store.claim_next(name, lease_s=60)) is not None:
            claimed[name].append(job.id)

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in zip("ab", stores, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == sorted(f"train-{i}" for i in range(20))  # all claimed, none twice
    assert {stores[0].job(j).owner for j in claimed["a"]} <= {"a"} and stores[0].job(everything[0]).attempts == 1
    for s in stores:
        s.close()


def test_a_claim_is_taken_back_only_when_its_lease_lapsed_and_a_cancel_survives_the_crash(settings):
    store = JobStore(settings.database)
    for i in range(3):
        store.add_job(f"train-{i}", "train", {"kinds": [f"k{i}"]})
    running = [store.claim_next("dead-worker", lease_s=60) for _ in range(3)]
    store.request_cancel("train-2")  # a DELETE, then the server died before the job read it
    assert store.recover("next-worker", time.time(), max_attempts=3) == []  # claims still live: left alone
    assert store.renew("train-0", "next-worker", 60) is False  # no one renews another worker's claim
    taken = dict(store.recover("next-worker", time.time() + 120, max_attempts=3))
    assert taken == {"train-0": "queued", "train-1": "queued", "train-2": "cancelled"}
    assert [store.job(j.id).owner for j in running] == [None] * 3
    assert store.job("train-0").progress == {"resumed": True}
    store.close()


def test_a_jobs_table_from_before_claims_gains_their_columns(settings):
    import sqlite3

    settings.database.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(settings.database)
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, request TEXT NOT NULL, status TEXT NOT "
                "NULL, progress TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
                "error TEXT)")  # fmt: skip
    old.execute("INSERT INTO jobs VALUES ('train-old', 'train', '{}', 'training', '{}', 't', 't', NULL)")
    old.commit()
    old.close()
    store = JobStore(settings.database)
    job = store.job("train-old")
    assert (job.attempts, job.cancel_requested, job.owner, job.run_id) == (0, False, None, None)
    assert dict(store.recover("w", time.time(), 3)) == {"train-old": "queued"}  # left running by an old server
    store.close()


def test_a_delete_answered_before_the_job_ended_always_ends_it_cancelled(settings):
    """A DELETE arriving during the last batch or while the report was written came back 'evaluating' and the job
    then ended 'done': the cancel looked lost. What was stored stays; the job says cancelled."""
    store = JobStore(settings.database)
    for i in range(3):
        store.add_job(f"train-{i}", "train", {"kinds": [f"k{i}"]})
        store.claim_next("w", lease_s=60)
    for job_id in ("train-0", "train-1"):
        assert store.request_cancel(job_id).status == "training"  # what the DELETE answers
    store.finish("train-0", "w", "done")  # the cancel came too late for should_stop
    store.finish("train-1", "w", "failed", "ValueError: bad row")
    store.finish("train-2", "w", "done")
    assert [store.job(f"train-{i}").status for i in range(3)] == ["cancelled", "failed", "done"]
    assert store.request_cancel("train-2").status == "done"  # a finished job is left as it is
    store.close()
