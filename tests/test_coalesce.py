import threading
import time

import pytest

from service.arms import ARMS, Query
from service.coalesce import Coalescer
from service.retrieval import IndexMissing
from service.runtime import Runtime

QUESTIONS = [Query("k2 ?"), Query("what does the k4 cost ?"), Query("battery hours of the camera please ?"),
             Query("the firmware version of the kestrel k4 router ?"), Query("a"), Query("is the k2 heavy or light ?")]  # fmt: skip


def ask_while_busy(coalescer: Coalescer, arm, queries):
    """Submit every query while a batch holds the turn, so they all wait together; then let them run."""
    results, errors = [None] * len(queries), [None] * len(queries)

    def one(i):
        try:
            results[i] = coalescer.answer(arm, queries[i])
        except Exception as exc:
            errors[i] = exc

    with coalescer._turn:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(queries))]
        for t in threads:
            t.start()
        while sum(len(v) for v in coalescer._pending.values()) < len(queries):
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=60)
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
