"""Query latency of the HTTP service: one query at a time per arm, and under concurrent load, each idle and
while an eval run is in progress.

Usage: python bench/bench_service.py [--single 12] [--max-new-tokens 32] [--queries 50] [--arm rag]
                                     [--corpus corpora/quillmark]

Serves the default engine and models with a real uvicorn on 127.0.0.1 (a fresh index; the trained adapters of
`artifact_dir`, e.g. the demo's). First `--single` POST /v1/query calls per ready arm, one after another
(`max_new_tokens` 32, the question families' answer length), p50/p95 of the client-side wall time. Then
`--queries` concurrent calls (distinct test questions) to `--arm`, polling /healthz, /readyz and /metrics
meanwhile. Then a background eval run (started over HTTP) and, while it answers, the same single queries to
base and rag and the same burst, with loaded/idle ratios. Prints figures only; asserts nothing (this machine is
shared and noisy). The server is started with api.max_queued_answers raised to fit the burst.

Then saturation (`--saturate-s` seconds, 0: none): `--clients` callers (default twice api.max_queued_answers)
each POST /v1/query in a loop on a second server with the default queue bound; answered queries per second and
the share refused with 429 (and any other status), with healthz p50/p99 meanwhile.

`--tiny` serves the test suite's in-code models (tests/tiny.py, transformers engine) instead of the defaults: a
smoke run of the script in about a minute, e.g.
    python bench/bench_service.py --tiny --queries 50 --single 0 --skip-run --saturate-s 15 --clients 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragft.eval.tasks import load_tasks  # noqa: E402
from ragft.service.app.api.main import create_app  # noqa: E402
from ragft.service.settings import Settings  # noqa: E402

from tests.live import serving  # noqa: E402


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def burst(url: str, questions: list[str], arm: str) -> dict:
    """All questions at once, one connection each; returns latencies (s), statuses and wall time."""

    def one(question: str) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/query", json={"question": question, "arms": [arm]}, timeout=3600)
        batch = r.json()["answers"][0].get("batch_size", 1) if r.status_code == 200 else 0
        return time.perf_counter() - t0, r.status_code, batch

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        results = list(pool.map(one, questions))
    wall = time.perf_counter() - t0
    latencies = [r[0] for r in results]
    return {"latencies": latencies, "statuses": [r[1] for r in results], "batches": [r[2] for r in results],
            "wall": wall}  # fmt: skip


def singles(url: str, questions: list[str], arm: str, max_new_tokens: int) -> dict:
    """One query at a time (after one warm-up): client-side wall time of each, and the answers' prompt tokens."""
    body = {"arms": [arm], "max_new_tokens": max_new_tokens}
    httpx.post(f"{url}/v1/query", json=body | {"question": questions[0]}, timeout=600).raise_for_status()
    latencies, prompt_tokens = [], []
    for question in questions:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/query", json=body | {"question": question}, timeout=600)
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        prompt_tokens.append(r.json()["answers"][0]["prompt_tokens"])
    return {"latencies": latencies, "prompt_tokens": prompt_tokens}


def show_singles(name: str, arm: str, b: dict) -> None:
    ms = [x * 1000 for x in b["latencies"]]
    print(f"{name:22s} {arm:9s} {len(ms):>3d} queries  p50 {percentile(ms, 50):7.0f}ms  p95 {percentile(ms, 95):7.0f}ms"
          f"  prompt tokens {statistics.mean(b['prompt_tokens']):.0f}")  # fmt: skip


def probe(url: str, stop) -> dict[str, list[float]]:
    """Latencies (s) of the operations endpoints, polled one after another until `stop` is set."""
    seen: dict[str, list[float]] = {"/healthz": [], "/readyz": [], "/metrics": []}
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            for path, latencies in seen.items():
                t0 = time.perf_counter()
                client.get(path)
                latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
    return seen


def show_probes(seen: dict[str, list[float]]) -> None:
    for path, lat in seen.items():
        ms = [x * 1000 for x in lat]
        print(f"{path:22s} {len(ms):>4d} probes while queued  p50 {percentile(ms, 50):7.1f}ms  "
              f"p99 {percentile(ms, 99):7.1f}ms  max {max(ms):7.1f}ms")  # fmt: skip


def show(name: str, b: dict) -> None:
    ok = sum(s == 200 for s in b["statuses"])
    lat = b["latencies"]
    print(
        f"{name:22s} {ok:>3d}/{len(lat):<3d} ok  p50 {percentile(lat, 50):7.1f}s  p95 {percentile(lat, 95):7.1f}s  "
        f"max {max(lat):7.1f}s  wall {b['wall']:7.1f}s  {len(lat) / b['wall']:.2f} answers/s  "
        f"mean batch {statistics.mean(b['batches']):.1f}"
    )


def saturate(url: str, questions: list[str], arm: str, clients: int, seconds: float) -> dict:
    """`clients` callers posting queries back to back for `seconds`: statuses and the wall time."""
    statuses: list[int] = []
    end = time.perf_counter() + seconds

    def caller(i: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            n = i
            while time.perf_counter() < end:
                r = client.post("/v1/query", json={"question": questions[n % len(questions)], "arms": [arm]})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    time.sleep(0.05)  # a polite client; Retry-After is ~1 s, a burst-y one would retry at once
                n += clients

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(caller, range(clients)))
    return {"statuses": statuses, "wall": time.perf_counter() - t0}


def show_saturation(b: dict, clients: int, limit: int) -> None:
    counts = {code: b["statuses"].count(code) for code in sorted(set(b["statuses"]))}
    total = len(b["statuses"])
    print(f"saturation: {clients} clients, api.max_queued_answers {limit}, {b['wall']:.1f}s: "
          f"{counts.get(200, 0) / b['wall']:.2f} answered queries/s, {total} requests, "
          f"429 rate {counts.get(429, 0) / max(1, total):.1%}, statuses {counts}")  # fmt: skip


def tiny_settings(tmp: Path, base: Settings) -> Settings:
    """The test suite's in-code models, for a smoke run."""
    from ragft.service.settings import ApiSettings, GenerationSettings, ModelSettings, RetrievalSettings

    from tests import tiny

    generator, embedder = tiny.build_generator(tmp / "generator"), tiny.build_embedder(tmp / "embedder")
    return Settings(
        data_dir=tmp / "data", artifact_dir=tmp / "data" / "artifacts",
        models=ModelSettings(generator=str(generator), embedder=str(embedder), engine="transformers"),
        retrieval=RetrievalSettings(chunk_tokens=24, chunk_overlap=4, top_k=2),
        generation=GenerationSettings(max_new_tokens=6, batch_size=4), api=ApiSettings(),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--arm", default="rag")
    parser.add_argument("--run-rows", type=int, default=200, help="Test rows per family of the background run.")
    parser.add_argument("--single", type=int, default=12, help="One-at-a-time queries per arm (0: none).")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Of the single queries.")
    parser.add_argument("--skip-run", action="store_true", help="No background eval run phase.")
    parser.add_argument("--saturate-s", type=float, default=60, help="Seconds of the saturation phase (0: none).")
    parser.add_argument("--clients", type=int, default=0, help="Saturation callers (0: 2 x api.max_queued_answers).")
    parser.add_argument("--tiny", action="store_true", help="The test suite's tiny models: a smoke run.")
    args = parser.parse_args()

    rows = [r for r in load_tasks(args.corpus) if r.split == "test" and r.family == "knowledge"]
    questions = [r.text for r in rows][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_settings(Path(tmp), Settings()) if args.tiny else Settings()
        api = base.api.model_copy(update={"max_queued_answers": max(base.api.max_queued_answers, 2 * args.queries)})
        # fresh index and db, cached f32 model; a queue that admits the whole burst
        if args.tiny:
            settings = base.model_copy(update={"api": api})
        else:
            settings = Settings(data_dir=Path(tmp), artifact_dir=base.artifact_dir, api=api)
        app = create_app(settings, args.corpus)
        app.state.runtime.index()
        with serving(app) as url:
            t0 = time.perf_counter()
            while httpx.get(f"{url}/readyz").status_code != 200:
                time.sleep(0.5)
            print(f"ready after {time.perf_counter() - t0:.1f}s; {len(questions)} concurrent queries, arm {args.arm}, "
                  f"max_new_tokens {settings.generation.max_new_tokens}\n")  # fmt: skip
            single = questions[: args.single]
            ready = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
            idle_singles = {arm: singles(url, single, arm, args.max_new_tokens) for arm in ready} if single else {}
            for arm, b in idle_singles.items():
                show_singles("idle, one at a time", arm, b)
            httpx.post(f"{url}/v1/query", json={"question": "warm up", "arms": [args.arm]}, timeout=600)
            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=1) as prober:
                polled = prober.submit(probe, url, stop)
                idle = burst(url, questions, args.arm)
                stop.set()
                seen = polled.result()
            show("idle", idle)
            show_probes(seen)

            if not args.skip_run:
                run_phase(url, args, questions, single, idle_singles, idle)
        if args.saturate_s:
            saturated = base.model_copy(update={"data_dir": Path(tmp) / "saturated"})  # the default queue bound
            app = create_app(saturated, args.corpus)
            app.state.runtime.index()
            with serving(app) as url:
                while httpx.get(f"{url}/readyz").status_code != 200:
                    time.sleep(0.5)
                clients = args.clients or 2 * saturated.api.max_queued_answers
                stop = threading.Event()
                with ThreadPoolExecutor(max_workers=1) as prober:
                    polled = prober.submit(probe, url, stop)
                    b = saturate(url, questions, args.arm, clients, args.saturate_s)
                    stop.set()
                    seen = polled.result()
                show_saturation(b, clients, saturated.api.max_queued_answers)
                show_probes(seen)


def run_phase(url: str, args, questions: list[str], single: list[str], idle_singles: dict, idle: dict) -> None:
    """Single queries and the burst again while an eval run answers in the background, against idle."""
    run = httpx.post(f"{url}/v1/runs", json={"arms": ["base", "rag"], "families": ["knowledge"],
                                             "limit": args.run_rows}).json()  # fmt: skip
    while (job := httpx.get(f"{url}/v1/runs/{run['id']}").json())["status"] != "evaluating":
        if job["status"] in ("failed", "done", "cancelled"):
            raise SystemExit(f"the background run ended before the burst: {job}")
        time.sleep(0.5)
    before = job["progress"].get("done", 0)
    for arm in [a for a in ("base", "rag") if a in idle_singles]:
        b = singles(url, single, arm, args.max_new_tokens)
        show_singles("during an eval run", arm, b)
        ratio = percentile(b["latencies"], 50) / percentile(idle_singles[arm]["latencies"], 50)
        done = httpx.get(f"{url}/v1/runs/{run['id']}").json()["progress"].get("done", 0)
        print(f"{'':22s} {arm:9s} loaded/idle p50 x{ratio:.2f}; the run answered {done - before} rows meanwhile")
        before = done
    before = httpx.get(f"{url}/v1/runs/{run['id']}").json()["progress"].get("done", 0)
    loaded = burst(url, questions, args.arm)
    job = httpx.get(f"{url}/v1/runs/{run['id']}").json()
    show("during an eval run", loaded)
    print(f"\nthe run stayed '{job['status']}' and answered {job['progress'].get('done', 0) - before} rows "
          "during the burst")  # fmt: skip
    print(f"loaded/idle: p50 x{percentile(loaded['latencies'], 50) / percentile(idle['latencies'], 50):.2f}, "
          f"p95 x{percentile(loaded['latencies'], 95) / percentile(idle['latencies'], 95):.2f}")  # fmt: skip
    httpx.delete(f"{url}/v1/runs/{run['id']}")
    while httpx.get(f"{url}/v1/runs/{run['id']}").json()["status"] not in ("cancelled", "done", "failed"):
        time.sleep(0.5)  # let the worker stop at its batch boundary before the server goes away


if __name__ == "__main__":
    main()
