"""Index build throughput, per-arm query latency and peak memory on the embedded default models.

Usage: python bench/bench_query.py [--questions N] [--corpus corpora/quillmark]
Prints figures only; asserts nothing (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.tasks import corpus_examples, load_tasks
from ragft.service.adapters import ArtifactMissing
from ragft.service.arms import ARMS, Query, answer
from ragft.service.runtime import Runtime
from ragft.service.settings import Settings


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Settings()
        settings = Settings(data_dir=Path(tmp), artifact_dir=base.artifact_dir)  # fresh index, cached f32 model
        gen = settings.generation
        runtime = Runtime(settings, args.corpus, corpus_examples(args.corpus, gen))
        t0 = time.perf_counter()
        runtime.embedder()
        print(f"embedder load: {time.perf_counter() - t0:.1f}s")
        report = runtime.index()
        print(
            f"index build: {report.chunks_total} chunks in {report.seconds:.2f}s = {report.chunks_total / report.seconds:.1f} chunks/s"
        )
        again = runtime.index()
        print(f"re-index unchanged corpus: {again.seconds:.2f}s, {again.chunks_embedded} chunks embedded")
        t0 = time.perf_counter()
        runtime.generator()
        print(f"generator load: {time.perf_counter() - t0:.1f}s")

        rows = [r for r in load_tasks(args.corpus) if r.split == "test" and r.family == "knowledge"][: args.questions]
        tokens = FAMILIES["knowledge"].max_new_tokens or gen.max_new_tokens
        print(
            f"\nper-query latency, one question at a time ({len(rows)} questions, max_new_tokens={tokens}, "
            f"engine {runtime.engine})"
        )
        print(f"{'arm':8s} {'p50 ms':>8s} {'p95 ms':>8s} {'prompt tok':>10s} {'gen tok':>8s}")
        for name in ("base", "fewshot", "rag", "lora", "rag_lora"):
            latencies, prompt, generated = [], [], []
            try:
                answer(ARMS[name], runtime, [Query(rows[0].text)], max_new_tokens=tokens)  # load / convert first
            except ArtifactMissing:
                print(f"{name:8s} (no trained artifact for this corpus: ragft train --corpus {args.corpus})")
                continue
            for row in rows:
                t0 = time.perf_counter()
                [a] = answer(ARMS[name], runtime, [Query(row.text)], max_new_tokens=tokens)
                latencies.append((time.perf_counter() - t0) * 1000)
                prompt.append(a.prompt_tokens)
                generated.append(a.generated_tokens)
            print(
                f"{name:8s} {percentile(latencies, 50):8.0f} {percentile(latencies, 95):8.0f} "
                f"{statistics.mean(prompt):10.0f} {statistics.mean(generated):8.1f}"
            )

        t0 = time.perf_counter()
        batch = answer(ARMS["rag"], runtime, [Query(r.text) for r in rows])
        elapsed = time.perf_counter() - t0
        print(f"\nrag batched (batch_size={gen.batch_size}): {len(batch) / elapsed:.2f} answers/s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
