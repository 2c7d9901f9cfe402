import threading
import time

import pytest

from service.app.api.job_store import JobStore, QueueFull
from service.app.api.jobs import JobWorker


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
