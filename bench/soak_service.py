"""A soak of the HTTP service: mixed traffic against a real uvicorn for `--minutes`, then the checks.

Usage: python bench/soak_service.py [--minutes 10] [--corpus corpora/quillmark] [--tiny]

Serves a copy of the corpus (document PUTs edit it) from a fresh data folder. Side by side, until the time is up:
queries (POST /v1/query, base and rag), chat completions streamed and dropped after a random number of events,
document PUTs and DELETEs of soak documents, and one small eval run (base and rag, 2 knowledge rows) started at
the beginning. Then it checks, and exits 1 if any check fails:
- no 5xx but the documented 503s (a query past api.query_timeout_s, a backend that does not answer);
- the run finished, and every row it chose has exactly one stored answer per arm;
- resident memory (RSS of this process, which serves): read after a warm-up that loads every model the traffic
  uses (a query per arm, a stream, a document PUT), sampled every 15 s through the soak, and at the end before and
  after handing freed memory back (glibc's malloc_trim), so growth that is a leak is told apart from what the
  allocator keeps; the first and second halves' growth are printed, not asserted.
`--tiny` serves the test suite's in-code models (a smoke run in about a minute with `--minutes 1`).

`--two-servers` (#36) adds a second server on the same data folder serving a sibling copy of the corpus, as a
team serving two corpora runs two `ragft serve` on the default data/. The queries, streams and document changes
go to the second one; beside them, small eval runs are submitted to either server (some cancelled through the
other), one status write of the server running the jobs fails (disk full, forced), a reader cycles through the
stored runs (rows and comparisons), and at half time the first server is stopped and started again while a run
is under way. Checked besides: every job ends (done, or cancelled when a DELETE reached it first), every row of
every finished run is answered exactly once per arm, the worker survived the failed write, and the restarted
server stood by while the other ran the jobs.
Prints figures; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragft.eval.tasks import load_tasks  # noqa: E402
from ragft.service.app.api.main import create_app  # noqa: E402
from ragft.service.memory import release_freed_memory, rss_mib  # noqa: E402
from ragft.service.settings import Settings  # noqa: E402

from bench.bench_service import tiny_settings  # noqa: E402
from tests.live import serving  # noqa: E402

DOCUMENTED_5XX = {503}


class Tally:
    """Statuses per kind of traffic, thread-safe."""

    def __init__(self):
        self.seen: dict[str, Counter] = {}
        self.lock = threading.Lock()

    def add(self, kind: str, status: int) -> None:
        with self.lock:
            self.seen.setdefault(kind, Counter())[status] += 1


def queries(url: str, questions: list[str], end: float, tally: Tally, rng: random.Random) -> None:
    with httpx.Client(base_url=url, timeout=900) as client:
        while time.monotonic() < end:
            arms = rng.choice([["base"], ["rag"], ["base", "rag"]])
            r = client.post("/v1/query", json={"question": rng.choice(questions), "arms": arms})
            tally.add("query", r.status_code)
            if r.status_code in (429, 503):
                time.sleep(float(r.headers.get("Retry-After", "1")) * rng.random())


def dropped_streams(url: str, questions: list[str], end: float, tally: Tally, rng: random.Random) -> None:
    with httpx.Client(base_url=url, timeout=900) as client:
        while time.monotonic() < end:
            body = {"model": rng.choice(["base", "rag"]), "stream": True,
                    "messages": [{"role": "user", "content": rng.choice(questions)}]}  # fmt: skip
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                tally.add("stream", r.status_code)
                keep = rng.randint(0, 4)  # events read before the client goes away
                for i, _ in enumerate(r.iter_lines()):
                    if i >= keep:
                        break
            time.sleep(rng.random())


def document_changes(url: str, corpus: str, end: float, tally: Tally, rng: random.Random) -> None:
    with httpx.Client(base_url=url, timeout=900) as client:
        n = 0
        while time.monotonic() < end:
            doc = f"soak-{n % 5}"
            if rng.random() < 0.3:
                r = client.delete(f"/v1/corpora/{corpus}/documents/{doc}")
                tally.add("delete", r.status_code)
            else:
                text = f"Soak document {n}: the test widget number {n} costs ${rng.randint(1, 999)}."
                r = client.put(f"/v1/corpora/{corpus}/documents/{doc}", json={"text": text})
                tally.add("put", r.status_code)
            n += 1
            time.sleep(1 + rng.random() * 2)


def sample_rss(samples: list[tuple[float, float]], stop: threading.Event, every_s: float = 15.0) -> None:
    """(seconds since the soak began, RSS MiB) every `every_s` seconds until `stop`."""
    t0 = time.monotonic()
    while not stop.wait(every_s):
        samples.append((time.monotonic() - t0, rss_mib()))


def warm_up(url: str, corpus: str, question: str) -> None:
    """Load what the traffic uses before the first reading: each arm's model, a stream, the index after a PUT."""
    with httpx.Client(base_url=url, timeout=900) as client:
        for arms in (["base"], ["rag"]):
            client.post("/v1/query", json={"question": question, "arms": arms}).raise_for_status()
        body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": question}]}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            for _ in r.iter_lines():
                pass
        client.put(f"/v1/corpora/{corpus}/documents/soak-0", json={"text": "Warm-up document."}).raise_for_status()
        client.delete(f"/v1/corpora/{corpus}/documents/soak-0").raise_for_status()


def returned_rss_mib() -> float:
    """RSS once glibc has handed the memory it keeps freed back to the system (what is still live)."""
    release_freed_memory()
    return rss_mib()


def stored_answers(database: Path, run_id: str) -> tuple[dict[str, list[str]], Counter]:
    """The rows a run chose (its meta) and how many answers each (arm, row, phase) has."""
    import json

    with sqlite3.connect(database) as conn:
        meta = json.loads(conn.execute("SELECT meta FROM runs WHERE id=?", (run_id,)).fetchone()[0] or "{}")
        counts = Counter(
            {(arm, row, phase): n for arm, row, phase, n in conn.execute(
                "SELECT arm, row_id, phase, COUNT(*) FROM predictions WHERE run_id=? GROUP BY arm, row_id, phase",
                (run_id,))}
        )  # fmt: skip
    return meta.get("rows", {}), counts


class FailOnce:
    """A jobs connection whose next status write fails as SQLite fails on a full disk (`--two-servers`)."""

    def __init__(self, conn):
        self.conn, self.armed = conn, True

    def __getattr__(self, name):
        return getattr(self.conn, name)

    def execute(self, sql, *args):
        if self.armed and sql.lstrip().upper().startswith("UPDATE JOBS SET STATUS"):
            self.armed = False
            raise sqlite3.OperationalError("database or disk is full (forced by the soak)")
        return self.conn.execute(sql, *args)


def job_traffic(urls: dict, end: float, tally: Tally, rng: random.Random, jobs: list[dict]) -> None:
    """Small eval runs submitted to either server every few seconds; a third cancelled through the other server."""
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < end - 20:  # the last ones have time to finish
            where, other = rng.sample(["a", "b"], 2)
            try:
                r = client.post(f"{urls[where]}/v1/runs", json={"arms": ["base"], "families": ["knowledge"],
                                                                 "limit": rng.randint(1, 3), "fresh": True})  # fmt: skip
                tally.add("submit", r.status_code)
                if r.status_code == 202:
                    job = {"id": r.json()["id"], "cancel": None}
                    jobs.append(job)
                    if rng.random() < 0.33:
                        time.sleep(rng.random() * 2)
                        d = client.delete(f"{urls[other]}/v1/runs/{job['id']}")
                        tally.add("cancel", d.status_code)
                        job["cancel"] = d.json().get("status") if d.status_code == 200 else None
            except httpx.TransportError:  # the server being restarted
                tally.add("submit", 0)
            time.sleep(2 + rng.random() * 4)


def reader(urls: dict, end: float, tally: Tally, rng: random.Random) -> None:
    """A read-only client cycling through the stored runs: the list, a page of rows, two runs compared."""
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < end:
            url = urls[rng.choice(["a", "b"])]
            try:
                listed = client.get(f"{url}/v1/results")
                tally.add("reader", listed.status_code)
                done = [r["id"] for r in listed.json() if r.get("status") == "done"] if listed.is_success else []
                if done:
                    run = rng.choice(done)
                    tally.add("reader", client.get(f"{url}/v1/results/{run}/rows", params={"limit": 5}).status_code)
                if len(done) > 1:
                    a, b = rng.sample(done, 2)
                    tally.add("reader", client.get(f"{url}/v1/compare/{a}/{b}").status_code)
            except httpx.TransportError:
                tally.add("reader", 0)
            time.sleep(rng.random())


def started_jobs() -> Counter:
    """How many times each job started, from the worker's log lines (a job resumed after a restart starts twice)."""
    import logging

    starts: Counter = Counter()

    class Starts(logging.Handler):
        def emit(self, record):
            if getattr(record, "status", None) == "started":
                starts[record.job_id] += 1

    logger = logging.getLogger("ragft.service.app.api.jobs")
    logger.setLevel(logging.INFO)
    logger.addHandler(Starts())
    return starts


def soak_two_servers(args, settings: Settings, corpus: Path, questions: list[str], failures: list[str]) -> None:
    """`--two-servers`: see the module's docstring."""
    import contextlib

    sibling = corpus.with_name(corpus.name + "-b")
    shutil.copytree(corpus, sibling)
    starts = started_jobs()
    first, second = create_app(settings, corpus), create_app(settings, sibling)
    first.state.runtime.index()
    second.state.runtime.index()
    a_side = contextlib.ExitStack()  # server A, which is stopped and started again
    with contextlib.ExitStack() as both:
        both.callback(a_side.close)  # last: after B
        urls = {"a": a_side.enter_context(serving(first))}  # A starts first: it holds the data folder's worker lock
        urls["b"] = url_b = both.enter_context(serving(second))
        for url in urls.values():
            while httpx.get(f"{url}/readyz").status_code != 200:
                time.sleep(0.5)
        holder = first
        print(f"two servers on {settings.data_dir}: A {urls['a']} ({worker_state(first)}), B {url_b} "
              f"({worker_state(second)}); {args.minutes:g} min")  # fmt: skip
        warm_up(url_b, sibling.name, questions[0])
        rss_start = rss_mib()
        samples: list[tuple[float, float]] = [(0.0, rss_start)]
        sampling = threading.Event()
        threading.Thread(target=sample_rss, args=(samples, sampling), daemon=True).start()
        began = time.monotonic()
        tally, end, jobs = Tally(), time.monotonic() + args.minutes * 60, []
        rng = random.Random(args.seed)
        workers = (
            [threading.Thread(target=queries, args=(url_b, questions, end, tally, random.Random(rng.random())))
             for _ in range(args.query_clients)]
            + [threading.Thread(target=dropped_streams, args=(url_b, questions, end, tally,
                                                              random.Random(rng.random())))
               for _ in range(args.stream_clients)]
            + [threading.Thread(target=document_changes, args=(url_b, sibling.name, end, tally,
                                                               random.Random(rng.random()))),
               threading.Thread(target=job_traffic, args=(urls, end, tally, random.Random(rng.random()), jobs)),
               threading.Thread(target=reader, args=(urls, end, tally, random.Random(rng.random())))]
        )  # fmt: skip
        for w in workers:
            w.start()
        time.sleep(args.minutes * 60 / 4)
        real = holder.state.jobs.store._conn
        holder.state.jobs.store._conn = FailOnce(real)  # the next status write of the job worker fails
        time.sleep(args.minutes * 60 / 4)
        holder.state.jobs.store._conn = real
        errors = getattr(holder.state.jobs, "errors", 0)
        print(f"forced status-write failure: the worker logged {errors} error(s) and is {worker_state(holder)}")
        if worker_state(holder) != "running" or errors < 1:
            failures.append(f"the job worker after a failed status write: {worker_state(holder)}, {errors} errors")
        stopped_at, rss_before_restart = time.monotonic() - began, rss_mib()
        a_side.close()  # server A stops (its running job, if any, is interrupted) ...
        restarted = create_app(settings, corpus)
        urls["a"] = a_side.enter_context(serving(restarted))  # ... and starts again
        while httpx.get(f"{urls['a']}/readyz").status_code != 200:
            time.sleep(0.5)
        time.sleep(jobs_poll_s())
        restarted_at = time.monotonic() - began
        print(f"A restarted in {restarted_at - stopped_at:.0f} s: RSS {rss_before_restart:.0f} MiB before, "
              f"{rss_mib():.0f} once it was ready")  # fmt: skip
        print(f"A restarted: A {worker_state(restarted)}, B {worker_state(second)}")
        if {worker_state(restarted), worker_state(second)} != {"running", "standby"}:
            failures.append(f"after the restart: A {worker_state(restarted)}, B {worker_state(second)}")
        for w in workers:
            w.join()
        deadline = time.monotonic() + 120  # a job still queued then never ran
        final = {}
        with httpx.Client(base_url=url_b, timeout=60) as client:
            for job in jobs:
                while (state := client.get(f"/v1/runs/{job['id']}").json())["status"] in (
                    "queued", "training", "evaluating", "interrupted") and time.monotonic() < deadline:  # fmt: skip
                    time.sleep(1)
                final[job["id"]] = state
        sampling.set()
        rss_end = rss_mib()
        for name, app in (("A", first), ("B", second), ("A restarted", restarted)):
            kept = getattr(app.state, "scored_runs", None)
            if kept is not None and hasattr(kept, "nbytes"):
                print(f"scored runs {name}: {kept.scorings} scorings, {kept.nbytes / 2**20:.1f} MiB kept "
                      f"(api.scored_runs_mb {settings.api.scored_runs_mb:g})")  # fmt: skip
    for kind, counts in sorted(tally.seen.items()):
        print(f"{kind:7s} {sum(counts.values()):>6d} requests  {dict(sorted(counts.items()))}")
        bad = {s: n for s, n in counts.items() if s >= 500 and s not in DOCUMENTED_5XX}
        if bad:
            failures.append(f"{kind}: undocumented 5xx {bad}")
    outcomes = Counter(state["status"] for state in final.values())
    print(f"jobs: {len(jobs)} submitted, {sum(j['cancel'] is not None for j in jobs)} cancelled through the other "
          f"server; ended {dict(outcomes)}; started once {sum(n == 1 for n in starts.values())}, twice or more "
          f"{sum(n > 1 for n in starts.values())} (resumed after the restart)")  # fmt: skip
    for job in jobs:
        state = final[job["id"]]
        wanted = {"done"} if job["cancel"] in (None, "done") else {"cancelled"}
        if state["status"] not in wanted:
            failures.append(f"job {job['id']} (DELETE answered {job['cancel']}) ended {state['status']}: "
                            f"{state.get('error')}")  # fmt: skip
        if state["status"] == "done":
            rows, counts = stored_answers(settings.database, state["run_id"])
            chosen = {row for family, ids in rows.items() if family.startswith("knowledge") for row in ids}
            answered = Counter(row for (a, row, _), n in counts.items() if a == "base" for _ in range(n))
            if set(answered) != chosen or any(n > 1 for n in answered.values()):
                failures.append(f"job {job['id']}: rows {sorted(chosen)}, answers {dict(answered)}")
    print("RSS by minute (MiB): " + ", ".join(f"{t / 60:.0f}: {m:.0f}" for t, m in samples if round(t) % 60 < 15))
    # growth is read over windows without a restart in them: the restart loads a third server's models
    settle_s = 60  # the restarted server's first jobs load its models
    for name, (start, stop) in (("warm-up to restart", (0.0, stopped_at)),
                                ("restart + 1 min to end", (restarted_at + settle_s, float("inf")))):  # fmt: skip
        window = [(t, m) for t, m in samples if start <= t <= stop]
        if len(window) < 2:
            print(f"RSS {name}: too few samples")
            continue
        (t0, m0), (t1, m1) = window[0], window[-1]
        print(f"RSS {name} ({t0 / 60:.1f}-{t1 / 60:.1f} min, no restart inside): {m0:.0f} -> {m1:.0f} MiB "
              f"({m1 - m0:+.0f} MiB, {100 * (m1 - m0) / m0:+.1f}%), peak {max(m for _, m in window):.0f}")  # fmt: skip
    print(f"RSS {rss_start:.0f} MiB after the warm-up (both servers), {rss_end:.0f} at the end "
          f"({rss_end - rss_start:+.0f}, a third server's models loaded by the restart included); "
          f"{returned_rss_mib():.0f} MiB once freed memory was handed back")  # fmt: skip


def worker_state(app) -> str:
    """The job worker's state ('running', 'standby', 'dead'); before #36 a worker had none: alive or not."""
    worker = app.state.jobs
    if hasattr(worker, "state"):
        return worker.state
    return "running" if worker._thread is not None and worker._thread.is_alive() else "dead"


def jobs_poll_s() -> float:
    from ragft.service.app.api import jobs

    return getattr(jobs, "POLL_S", 1.0) * 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--query-clients", type=int, default=8)
    parser.add_argument("--stream-clients", type=int, default=4)
    parser.add_argument("--run-rows", type=int, default=2, help="Knowledge rows of the small eval run.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="The test suite's tiny models: a smoke run.")
    parser.add_argument("--two-servers", action="store_true", help="Two servers on one data folder (#36).")
    args = parser.parse_args()

    questions = [r.text for r in load_tasks(args.corpus) if r.split == "test" and r.family == "knowledge"]
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpora" / args.corpus.resolve().name
        shutil.copytree(args.corpus, corpus)  # PUTs edit it
        base = Settings()
        settings = (tiny_settings(tmp, base) if args.tiny else
                    Settings(data_dir=tmp / "data", artifact_dir=base.artifact_dir))  # fmt: skip
        settings = settings.model_copy(update={"eval": settings.eval.model_copy(update={"reports_dir": tmp / "r"})})
        if args.two_servers:
            soak_two_servers(args, settings, corpus, questions, failures)
            print("soak: " + ("FAILED\n  " + "\n  ".join(failures) if failures else "every check passed"))
            raise SystemExit(1 if failures else 0)
        app = create_app(settings, corpus)
        app.state.runtime.index()
        with serving(app) as url:
            while httpx.get(f"{url}/readyz").status_code != 200:
                time.sleep(0.5)
            rss_ready = rss_mib()
            warm_up(url, corpus.name, questions[0])
            rss_start = rss_mib()
            print(f"serving {corpus.name} at {url}; RSS {rss_ready:.0f} MiB ready, {rss_start:.0f} MiB after the "
                  f"warm-up; {args.minutes:g} min of mixed traffic")  # fmt: skip
            samples: list[tuple[float, float]] = [(0.0, rss_start)]
            sampling = threading.Event()
            threading.Thread(target=sample_rss, args=(samples, sampling), daemon=True).start()
            run = httpx.post(f"{url}/v1/runs", json={"arms": ["base", "rag"], "families": ["knowledge"],
                                                     "limit": args.run_rows, "fresh": True}).json()  # fmt: skip
            tally, end = Tally(), time.monotonic() + args.minutes * 60
            rng = random.Random(args.seed)
            workers = (
                [threading.Thread(target=queries, args=(url, questions, end, tally, random.Random(rng.random())))
                 for _ in range(args.query_clients)]
                + [threading.Thread(target=dropped_streams, args=(url, questions, end, tally,
                                                                  random.Random(rng.random())))
                   for _ in range(args.stream_clients)]
                + [threading.Thread(target=document_changes, args=(url, corpus.name, end, tally,
                                                                   random.Random(rng.random())))]
            )  # fmt: skip
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            while (job := httpx.get(f"{url}/v1/runs/{run['id']}").json())["status"] in ("queued", "training",
                                                                                        "evaluating"):  # fmt: skip
                time.sleep(1)
            time.sleep(2)  # dropped streams' worker threads finish their last token
            sampling.set()
            rss_end = rss_mib()
            rss_returned = returned_rss_mib()
            for kind, counts in sorted(tally.seen.items()):
                print(f"{kind:7s} {sum(counts.values()):>6d} requests  {dict(sorted(counts.items()))}")
                bad = {s: n for s, n in counts.items() if s >= 500 and s not in DOCUMENTED_5XX}
                if bad:
                    failures.append(f"{kind}: undocumented 5xx {bad}")
            print(f"run {job['id']} ({job.get('run_id')}): {job['status']}" + (f", error {job['error']}"
                                                                              if job.get("error") else ""))  # fmt: skip
            if job["status"] != "done":
                failures.append(f"the run ended {job['status']}")
            else:
                rows, counts = stored_answers(settings.database, job["run_id"])
                chosen = {row for family, ids in rows.items() if family.startswith("knowledge") for row in ids}
                for arm in ("base", "rag"):
                    answered = Counter(row for (a, row, _), n in counts.items() if a == arm for _ in range(n))
                    missing = chosen - set(answered)
                    twice = {row for row, n in answered.items() if n > 1}
                    print(f"run answers {arm:5s}: {len(answered)} rows answered, {len(chosen)} chosen, "
                          f"{len(missing)} missing, {len(twice)} answered twice")  # fmt: skip
                    if missing or twice:
                        failures.append(f"arm {arm}: missing {sorted(missing)}, twice {sorted(twice)}")
            waiting = app.state.coalescer._admitted
            print("RSS by minute (MiB): " + ", ".join(f"{t / 60:.0f}: {m:.0f}" for t, m in samples
                                                      if round(t) % 60 < 15))  # fmt: skip
            half = samples[len(samples) // 2][1]
            print(f"RSS {rss_start:.0f} MiB after the warm-up, {half:.0f} at half time, {rss_end:.0f} at the end "
                  f"(first half {half - rss_start:+.0f}, second half {rss_end - half:+.0f}), peak "
                  f"{max(m for _, m in samples):.0f}; {rss_returned:.0f} MiB once freed memory was handed back; "
                  f"queue places still held {waiting}")  # fmt: skip
            if waiting:
                failures.append(f"{waiting} queue places still held after the traffic stopped")
    print("soak: " + ("FAILED\n  " + "\n  ".join(failures) if failures else "every check passed"))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
