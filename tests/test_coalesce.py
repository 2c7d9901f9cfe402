import asyncio
import time

import pytest
from ragft.service.arms import ARMS, Query
from ragft.service.coalesce import Busy, Coalescer, DeadlineExceeded
from ragft.service.retrieval import IndexMissing
from ragft.service.runtime import Runtime

QUESTIONS = [Query("k2 ?"), Query("what does the k4 cost ?"), Query("battery hours of the camera please ?"),
             Query("the firmware version of the kestrel k4 router ?"), Query("a"), Query("is the k2 heavy or light ?")]  # fmt: skip


def ask_while_busy(coalescer: Coalescer, arm, queries):
    """Queue every query separately while the dispatcher cannot take any (its queue's lock held here), so they
    all wait together; then let them run."""
    results, errors = [None] * len(queries), [None] * len(queries)
    with coalescer._cv:
        futures = [coalescer.submit(arm, [q])[0] for q in queries]
    for i, future in enumerate(futures):
        try:
            results[i] = future.result(timeout=60)
        except Exception as exc:
            errors[i] = exc
    return results, errors


def test_waiting_queries_share_batches_and_each_gets_its_own_answer(settings, corpus):
    runtime = Runtime(settings, corpus)
    runtime.index()
    results, errors = ask_while_busy(Coalescer(runtime, max_batch=4), ARMS["rag"], QUESTIONS)
    assert errors == [None] * len(QUESTIONS)
    assert sorted(r.batch_size for r in results) == [2, 2, 4, 4, 4, 4]  # two turns instead of six
    alone = [Coalescer(runtime, max_batch=4).answer(ARMS["rag"], q) for q in QUESTIONS]
    assert [r.prompt_tokens for r in results] == [a.prompt_tokens for a in alone]  # nobody got another's answer
    chunks = [[p.chunk_id for p in r.passages] for r in results]
    assert chunks == [[p.chunk_id for p in a.passages] for a in alone]  # scores differ in float noise only
    assert all(a.batch_size == 1 for a in alone)  # idle: a lone query runs at once


def test_an_arm_error_reaches_every_waiting_query(settings, corpus):
    results, errors = ask_while_busy(Coalescer(Runtime(settings, corpus), max_batch=8), ARMS["rag"], QUESTIONS[:3])
    assert results == [None] * 3 and all(isinstance(e, IndexMissing) for e in errors)
    with pytest.raises(IndexMissing):  # and the coalescer keeps working afterwards
        Coalescer(Runtime(settings, corpus), max_batch=8).answer(ARMS["rag"], QUESTIONS[0])


def test_the_queue_is_bounded_and_says_when_to_retry(settings, corpus):
    coalescer = Coalescer(Runtime(settings, corpus), max_batch=4, max_queued=3)
    release = coalescer.reserve(2)
    with pytest.raises(Busy, match=r"api.max_queued_answers") as refused:
        coalescer.reserve(2)
    assert refused.value.retry_after_s >= 1
    release()
    release()  # giving back twice frees nothing twice
    with coalescer.admitted(3), pytest.raises(Busy):
        coalescer.reserve(1)
    coalescer.reserve(3)


def test_a_query_still_queued_at_its_deadline_is_withdrawn_and_the_queue_goes_on(settings, corpus):
    runtime = Runtime(settings, corpus)
    coalescer = Coalescer(runtime, max_batch=4, timeout_s=0.3)
    with runtime.lock:  # the model is busy: the first batch blocks, the next query waits in the queue
        blocker = coalescer.submit(ARMS["base"], [QUESTIONS[0]])[0]
        while coalescer.queued:
            time.sleep(0.01)
        with pytest.raises(DeadlineExceeded, match="api.query_timeout_s"):
            asyncio.run(coalescer.answers(ARMS["base"], [QUESTIONS[1]]))
    assert blocker.result(timeout=60).text is not None  # the batch already generating ran to its end
    assert coalescer.answer(ARMS["base"], QUESTIONS[2]).batch_size == 1  # the withdrawn query never ran with it
    assert coalescer.queued == 0


def test_a_query_that_fails_its_batch_fails_alone(settings, corpus):
    """One bad input (here a lone surrogate, which the tokenizer refuses for the whole batch) must not fail the
    queries batched with it: they are answered, and it alone gets a 422."""
    from ragft.service.coalesce import QueryFailed

    runtime = Runtime(settings, corpus)
    queries = [QUESTIONS[0], Query("k2 \ud800 ?"), QUESTIONS[1]]
    results, errors = ask_while_busy(Coalescer(runtime, max_batch=4), ARMS["base"], queries)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], QueryFailed) and errors[1].status_code == 422
    alone = [Coalescer(runtime, max_batch=4).answer(ARMS["base"], q) for q in (QUESTIONS[0], QUESTIONS[1])]
    assert [r.text for r in (results[0], results[2])] == [a.text for a in alone]


def test_a_remote_backend_answer_past_the_deadline_is_a_503_at_the_deadline(settings, corpus, monkeypatch):
    """Arms on a remote backend skip the queue but not the deadline: a backend that hangs gives DeadlineExceeded
    at api.query_timeout_s, not after its own (longer) request timeout."""
    import threading

    from ragft.service import coalesce

    runtime = Runtime(settings, corpus)
    monkeypatch.setattr(runtime, "runs_locally", lambda arm: False)
    release = threading.Event()
    monkeypatch.setattr(coalesce, "answer", lambda *args: release.wait(30))  # a backend that does not answer
    coalescer = Coalescer(runtime, max_batch=4, timeout_s=0.3)

    async def ask() -> float:
        t0 = time.perf_counter()
        try:
            with pytest.raises(DeadlineExceeded, match="api.query_timeout_s"):
                await coalescer.answers(ARMS["base"], [QUESTIONS[0]])
            return time.perf_counter() - t0
        finally:
            release.set()  # asyncio.run waits for the executor's threads at its end

    assert asyncio.run(ask()) < 5
