"""Concurrent queries to the same arm share one batched generate() call, through one bounded queue.

In-process generation runs one batch at a time (one set of weights, a few CPU cores). Queries
that arrive while a batch runs wait for the next turn and go together: on this 2-core CPU,
batched greedy decoding answers about three times more questions per second than one at a
time, so under load each waits less. An idle service answers a lone query at once: nothing
waits for a timer. Arms served by a remote backend skip the queue: the server batches itself.

The queue is bounded: `admitted` refuses work past `api.max_queued_answers` (the route answers
429 with Retry-After), and a query still waiting for its turn at its deadline is withdrawn. One
dispatcher thread runs the batches; callers wait on futures, so a waiting HTTP request holds no
worker thread and /healthz never queues behind it.

Example:
    >>> coalescer = Coalescer(runtime, max_batch=16, max_queued=64, timeout_s=300)  # doctest: +SKIP
    >>> with coalescer.admitted(1):                                                  # doctest: +SKIP
    ...     [a] = await coalescer.answers(ARMS["rag"], [Query("How much is a K2?")])
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

from ragft.service.arms import Answer, Arm, Query, answer
from starlette.exceptions import HTTPException


class Busy(RuntimeError):
    """The queue is full; retry after `retry_after_s` seconds (about one batch)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(RuntimeError):
    """A query waited past its deadline (api.query_timeout_s) without its turn coming."""

    retry_after_s = 30


class QueryFailed(HTTPException):
    """A query that failed alone while the queries batched with it were answered: its input is at fault (422)."""

    def __init__(self, cause: Exception):
        super().__init__(
            422, f"this question could not be answered ({type(cause).__name__}: {cause}); the questions batched "
            "with it were answered, so its text is at fault",
        )  # fmt: skip
        self.__cause__ = cause


_order = itertools.count()


@dataclass(eq=False)
class _Pending:
    query: Query
    future: Future = field(default_factory=Future)
    seq: int = field(default_factory=lambda: next(_order))  # batches go oldest first


class Coalescer:
    def __init__(self, runtime, max_batch: int, max_queued: int | None = None, timeout_s: float | None = None):
        self.runtime = runtime
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.last_batch_s = 1.0  # wall time of the latest batch, for Retry-After
        self._pending: dict[tuple, list[_Pending]] = {}
        self._admitted = 0
        self._cv = threading.Condition()  # guards _pending, _admitted and the dispatcher's start
        self._dispatcher: threading.Thread | None = None

    @property
    def queued(self) -> int:
        """Queries waiting for their batch's turn."""
        with self._cv:
            return sum(len(v) for v in self._pending.values())

    def reserve(self, answers: int) -> Callable[[], None]:
        """Take `answers` places in the queue, or raise Busy when they would pass its bound; returns the
        function that gives them back (calling it again does nothing)."""
        with self._cv:
            if self.max_queued is not None and self._admitted + answers > self.max_queued:
                raise Busy(
                    f"{self._admitted} answers are queued or generating and this request adds {answers}; the limit "
                    f"is {self.max_queued} (api.max_queued_answers). Retry later.",
                    max(1, math.ceil(self.last_batch_s)),
                )
            self._admitted += answers
        held = [answers]

        def release() -> None:
            with self._cv:
                self._admitted -= held.pop() if held else 0

        return release

    @contextmanager
    def admitted(self, answers: int) -> Iterator[None]:
        """Hold `answers` places for the block (see `reserve`)."""
        release = self.reserve(answers)
        try:
            yield
        finally:
            release()

    def submit(
        self, arm: Arm, queries: list[Query], top_k: int | None = None, max_new_tokens: int | None = None
    ) -> list[Future]:
        """Queue `queries` for `arm`; each future gets its Answer, or the error the arm raised."""
        key = (arm, top_k, max_new_tokens)
        pending = [_Pending(q) for q in queries]
        with self._cv:
            self._pending.setdefault(key, []).extend(pending)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="ragft-coalescer", daemon=True)
                self._dispatcher.start()
            self._cv.notify()
        return [p.future for p in pending]

    async def answers(
        self, arm: Arm, queries: list[Query], top_k: int | None = None, max_new_tokens: int | None = None
    ) -> list[Answer]:
        """`arm`'s answers to `queries`, generated in batches with whatever else waits for the same arm.

        Raises DeadlineExceeded when some of them are still waiting at the deadline; those are withdrawn,
        while a batch already generating runs to its end (bounded by max_new_tokens)."""
        if not self.runtime.runs_locally(arm):  # the server batches; the deadline still holds
            try:
                # asyncio's executor, not anyio's: a request past its deadline returns at once, the thread runs on
                # until the backend answers or its own timeout (models.backend_timeout_s) ends it
                return await asyncio.wait_for(
                    asyncio.to_thread(answer, arm, self.runtime, queries, top_k, max_new_tokens), self.timeout_s
                )
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the generator backend did not answer arm '{arm.name}' within {self.timeout_s:g} s "
                    "(api.query_timeout_s); retry later"
                ) from None
        futures = self.submit(arm, queries, top_k, max_new_tokens)
        waiting = [asyncio.wrap_future(f) for f in futures]
        for w in waiting:  # one batch error reaches every future: mark each seen, so none is logged as lost
            w.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            _, late = await asyncio.wait(waiting, timeout=self.timeout_s)
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()  # the request went away: what has not started never will
            raise
        if late:
            withdrawn = [f.cancel() for f in futures if not f.done()]
            if any(withdrawn):
                raise DeadlineExceeded(
                    f"{sum(withdrawn)} of {len(queries)} answers of arm '{arm.name}' were still queued after "
                    f"{self.timeout_s:g} s (api.query_timeout_s); the service is saturated, retry later"
                )
        return [await w for w in waiting]

    def answer(self, arm: Arm, query: Query, top_k: int | None = None, max_new_tokens: int | None = None) -> Answer:
        """The blocking form of `answers` for one query (no deadline), for callers outside the event loop."""
        if not self.runtime.runs_locally(arm):
            return answer(arm, self.runtime, [query], top_k, max_new_tokens)[0]
        return self.submit(arm, [query], top_k, max_new_tokens)[0].result()

    def _dispatch(self) -> None:
        """Run the oldest waiting arm's next batch, for ever; futures withdrawn meanwhile are skipped."""
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                key = min(self._pending, key=lambda k: self._pending[k][0].seq)
                waiting = self._pending.pop(key)
                batch, rest = waiting[: self.max_batch], waiting[self.max_batch :]
                if rest:
                    self._pending[key] = rest
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if batch:
                self._run(key, batch)

    def _run(self, key: tuple, batch: list[_Pending]) -> None:
        arm, top_k, max_new_tokens = key
        started = time.perf_counter()
        try:
            results = answer(arm, self.runtime, [p.query for p in batch], top_k, max_new_tokens)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
            else:
                self._run_alone(arm, batch, top_k, max_new_tokens)
        except BaseException as exc:  # an interrupt: every query of the batch gets it
            for p in batch:
                p.future.set_exception(exc)
        else:
            for p, result in zip(batch, results, strict=True):
                p.future.set_result(result)
        self.last_batch_s = time.perf_counter() - started

    def _run_alone(self, arm: Arm, batch: list[_Pending], top_k: int | None, max_new_tokens: int | None) -> None:
        """Answer each query of a failed batch on its own, so one bad input (a tokenizer error) fails only itself:
        a query that fails while others are answered gets QueryFailed (422); when all fail, each gets its error."""
        outcomes: list[Answer | Exception] = []
        for p in batch:
            try:
                outcomes.append(answer(arm, self.runtime, [p.query], top_k, max_new_tokens)[0])
            except Exception as exc:
                outcomes.append(exc)
        answered = any(isinstance(o, Answer) for o in outcomes)
        for p, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Answer):
                p.future.set_result(outcome)
            else:
                p.future.set_exception(QueryFailed(outcome) if answered else outcome)
