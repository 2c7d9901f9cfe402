"""Prompt sizing for the rag arms: recall@k of the answer-bearing document against rag prompt tokens.

A rag prompt on 2 CPU cores is prefill-bound (0.27 GFLOP per SmolLM2 token), so every passage token costs
answer time. For each chunk length and top_k this prints, over a corpus's knowledge test rows: recall@k (a
passage from a source document is retrieved), the share whose retrieved passages contain an accepted answer
verbatim, and the mean and p95 rag prompt length in generator tokens. Retrieval only: no generation.

With --answer, the rag arm also answers every row (greedy, the configured engine) and its knowledge headline
(`answer_contained`) and seconds per answer are printed: the measurement the defaults are chosen from.

Usage: python bench/bench_prompts.py [--corpus corpora/quillmark] [--chunks 128,200] [--top-k 2,3,4] [--answer]
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ragft.eval.tasks import load_tasks
from ragft.service import models
from ragft.service.prompts import build_messages
from ragft.service.runtime import Runtime
from ragft.service.settings import RetrievalSettings, Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--chunks", default="128,200")
    parser.add_argument("--top-k", default="2,3,4")
    parser.add_argument("--answer", action="store_true", help="also answer with the rag arm and score it")
    args = parser.parse_args()
    rows = [r for r in load_tasks(args.corpus) if r.family == "knowledge" and r.split == "test"]
    base = Settings()
    source = models.resolve_generator(base.models)
    _, tokenizer, _ = models.load_generator(base.models, base.artifact_dir)
    print(f"{len(rows)} knowledge test rows of {args.corpus}; generator {source.model_id}")
    print(f"{'chunk':>5} {'top_k':>5} {'recall@k':>9} {'answer in passages':>19} {'prompt tokens mean':>19} {'p95':>6}"
          + (f" {'rag answer_contained':>21} {'s/answer':>9}" if args.answer else ""))  # fmt: skip
    for chunk in (int(c) for c in args.chunks.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            retrieval = RetrievalSettings(chunk_tokens=chunk, chunk_overlap=min(40, chunk // 5))
            settings = base.model_copy(update={"data_dir": Path(tmp), "retrieval": retrieval})
            runtime = Runtime(settings, args.corpus)
            runtime.index()
            for k in (int(x) for x in args.top_k.split(",")):
                found = runtime.retriever().search([r.text for r in rows], k)
                recall = statistics.mean(
                    any(p.doc_id in r.source_docs for p in ps) for r, ps in zip(rows, found, strict=True)
                )
                holds = statistics.mean(
                    any(a.lower() in p.text.lower() for p in ps for a in r.answers)
                    for r, ps in zip(rows, found, strict=True)
                )
                phrase = settings.generation.abstention_phrase
                texts = [tokenizer.apply_chat_template(build_messages(r.text, passages=ps, abstention_phrase=phrase),
                                                       tokenize=False, add_generation_prompt=True)
                         for r, ps in zip(rows, found, strict=True)]  # fmt: skip
                lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
                p95 = statistics.quantiles(lengths, n=20)[-1]
                line = f"{chunk:>5} {k:>5} {recall:>9.3f} {holds:>19.3f} {statistics.mean(lengths):>19.0f} {p95:>6.0f}"
                if args.answer:
                    line += " " + rag_score(runtime, rows, k)
                print(line, flush=True)


def rag_score(runtime: Runtime, rows, top_k: int) -> str:
    """The rag arm's answer_contained over `rows` with `top_k` passages, and wall seconds per answer."""
    from ragft.eval.scoring.metrics import ScoringContext
    from ragft.eval.scoring.metrics.knowledge import corpus_answers, knowledge_correct
    from ragft.eval.store import Prediction
    from ragft.service.arms import ARMS, Query, answer

    ctx = ScoringContext(runtime.settings.generation.abstention_phrase, corpus_answers=corpus_answers(rows))
    t0 = time.perf_counter()
    answers = []
    for start in range(0, len(rows), 16):
        answers += answer(ARMS["rag"], runtime, [Query(r.text) for r in rows[start : start + 16]], top_k=top_k)
    seconds = (time.perf_counter() - t0) / len(rows)
    scores = [knowledge_correct(r, Prediction("rag", r.id, "main", a.text, (), 0, 0, 0.0, 0.0, 1), ctx)
              for r, a in zip(rows, answers, strict=True)]  # fmt: skip
    return f"{statistics.mean(scores):>21.3f} {seconds:>9.2f}"


if __name__ == "__main__":
    main()
