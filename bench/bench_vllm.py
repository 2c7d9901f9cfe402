"""The same rows answered in-process (CTranslate2, transformers) and by a vLLM server: identical answers and answers/s.

Usage (the vLLM server first, on the same corpus's adapters; see docs/scaling.md):
    bench/vllm_cpu.sh serve corpora/quillmark 8000 &
    OMP_WAIT_POLICY=PASSIVE python bench/bench_vllm.py --corpus corpora/quillmark --arms base,rag,lora --limit 20 \
        --url http://127.0.0.1:8000/v1 [--engines ctranslate2,transformers] [--json out.json]

Each arm answers the test rows `ragft eval --limit N` samples (the same seeded rows, the same prompts, the adapter
group each row's family uses), greedy, in the engine's batches: in-process `generation.batch_size` prompts a call,
vLLM `models.backend_concurrency` requests in flight that it batches itself. Per arm: answers identical to each
in-process engine's out of N, and for the others the word where they part (a near tie that float32 kernels summing
in another order break apart the other way shows up as a late divergence on an otherwise equal answer); answers/s
of each. How LoRA is served changes its cost: CTranslate2 merges each adapter into a converted copy of the model
(base speed, a copy per adapter), transformers runs peft's unmerged adapter, vLLM runs it unmerged (punica
kernels, every adapter on one copy of the weights). On a shared machine only ratios within one run mean anything.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.running.runner import prompt_arm, select_rows
from ragft.eval.tasks import example_key, load_tasks
from ragft.service.arms import ARMS, Query, answer
from ragft.service.runtime import Runtime
from ragft.service.settings import get_settings

# How each engine serves a LoRA arm: it changes the arm's cost, so the figures say which way it was served.
LORA_SERVED = {"ctranslate2": "merged into a converted copy of the model", "transformers": "unmerged (peft)",
               "vllm": "unmerged (vLLM's LoRA kernels, every adapter beside one copy of the weights)"}  # fmt: skip


def rows_and_queries(corpus: Path, families: list[str], limit: int, seed: int):
    chosen = select_rows(load_tasks(corpus), families, limit, seed)
    rows = [r for family_rows in chosen.values() for r in family_rows]
    queries = [Query(r.text, r.instruction, example_key(r), FAMILIES[r.family].adapter_group) for r in rows]
    return rows, queries


def answer_all(runtime: Runtime, arm: str, rows, queries) -> tuple[list[str], float]:
    """Every row's answer under `arm` (closed-book families get its weights only, as the runner asks), and seconds."""
    t0 = time.perf_counter()
    texts: list[str | None] = [None] * len(rows)
    by_arm: dict = {}
    for i, r in enumerate(rows):
        by_arm.setdefault(prompt_arm(ARMS[arm], r), []).append(i)
    for asked, members in by_arm.items():
        for i, a in zip(members, answer(asked, runtime, [queries[i] for i in members]), strict=True):
            texts[i] = a.text
    return texts, time.perf_counter() - t0


def parted_at(a: str, b: str) -> int:
    """Index of the first word where two answers differ."""
    wa, wb = a.split(), b.split()
    return next((i for i, (x, y) in enumerate(zip(wa, wb, strict=False)) if x != y), min(len(wa), len(wb)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    p.add_argument("--arms", default="base,rag,lora")
    p.add_argument("--families", default="knowledge,abstention,behaviour")
    p.add_argument("--limit", type=int, default=20, help="test rows per family, sampled as ragft eval --limit does")
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the vLLM server's /v1 URL")
    p.add_argument("--model", default="base", help="the server's name for the base model")
    p.add_argument("--engines", default="ctranslate2,transformers")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    settings = get_settings()
    arms = args.arms.split(",")
    rows, queries = rows_and_queries(args.corpus, args.families.split(","), args.limit, settings.generation.seed)
    answers, seconds = {}, {}
    first = {q.adapter_group: i for i, q in reversed(list(enumerate(queries)))}  # a row of each adapter group
    warm = ([rows[i] for i in first.values()], [queries[i] for i in first.values()])
    for engine in args.engines.split(","):
        local = settings.model_copy(update={"models": settings.models.model_copy(update={"engine": engine})})
        runtime = Runtime(local, args.corpus)
        runtime.load_generation()
        for arm in arms:  # loading, and each adapter's conversion (CTranslate2), outside the clock
            answer_all(runtime, arm, *warm)
            answers[engine, arm], seconds[engine, arm] = answer_all(runtime, arm, rows, queries)
    remote = settings.model_copy(update={"models": settings.models.model_copy(update={
        "generator_backend": "openai", "backend_url": args.url, "backend_model": args.model})})  # fmt: skip
    runtime = Runtime(remote, args.corpus)
    for arm in arms:
        answer_all(runtime, arm, *warm)
        answers["vllm", arm], seconds["vllm", arm] = answer_all(runtime, arm, rows, queries)

    n = len(rows)
    engines = [*args.engines.split(","), "vllm"]
    figures = {"rows": n, "corpus": str(args.corpus), "families": args.families, "limit": args.limit,
               "lora_served": {e: LORA_SERVED[e] for e in engines}, "arms": {}}  # fmt: skip
    print(
        f"{n} rows ({args.families}, --limit {args.limit}), greedy, max_new_tokens {settings.generation.max_new_tokens}"
    )
    for arm in arms:
        entry = {"answers_per_s": {e: round(n / seconds[e, arm], 3) for e in engines}}
        for engine in args.engines.split(","):
            pairs = list(zip(answers[engine, arm], answers["vllm", arm], strict=True))
            entry[f"identical_to_{engine}"] = sum(a == b for a, b in pairs)
            entry[f"parted_at_word_{engine}"] = sorted(parted_at(a, b) for a, b in pairs if a != b)
        figures["arms"][arm] = entry
        rates = ", ".join(f"{e} {r:.2f}/s" for e, r in entry["answers_per_s"].items())
        same = ", ".join(f"{entry[f'identical_to_{e}']}/{n} as {e}" for e in args.engines.split(","))
        print(f"{arm:8} vLLM identical: {same}; answers/s: {rates}")
        for engine in args.engines.split(","):
            if entry[f"parted_at_word_{engine}"]:
                print(f"         differing from {engine} from word {entry[f'parted_at_word_{engine}']}")
    if any(ARMS[a].adapter for a in arms):
        print("LoRA served: " + "; ".join(f"{e} {LORA_SERVED[e]}" for e in engines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
