"""Answers/s of each engine and compute type on the embedded default, against transformers float32 in the same run.

Usage: OMP_WAIT_POLICY=PASSIVE python bench/bench_engines.py [--short 16] [--rag 8] [--fixed 16] [--no-lora]
           [--headlines reports/RUN_FLOAT32 reports/RUN_INT8 [--only-headlines]]

Prompt sets: the base arm's prompts for knowledge test questions of corpora/quillmark ("short"), rag-length
prompts (the same questions with top_k passages of chunk_tokens embedder tokens, the answer's document first;
no index is built, so the passages are not the retriever's but their length is), and a fixed set of prompts of
exactly 216 tokens (llama.cpp answered 3.5/s on these with the Q4_1 GGUF on a 2-core machine of this kind).
The lora arm uses the trained questions adapter of the corpus where one is stored (e.g. the demo's), else a
rank-16 adapter with random weights (speed and the conversion check, not quality).
Agreement is the share of answers identical to transformers float32's. Per answer: the wall clock, the old
recorded cost (its batch's latency split over the batch) and the recorded machine time (`Generation.machine_ms`,
the batch's share of the call's wall clock): batches run side by side on replicas made the split latency read
higher than the wall clock, so the faster engine looked slower. Prompt tokens/s is set against the
float32 compute limit of these cores: ~100 GFLOP/s / 0.27 GFLOP per token (2 x 135M parameters) = ~370 tok/s.
The machine is shared, so only ratios within one run mean anything. Prints figures; asserts nothing.
--headlines compares two runs of the same rows answered in two compute types (`ragft demo` and
`ragft demo --set models.compute_type=int8 --run-id ...`): per family and arm the headline in each, the
difference against the first run's interval half-width, and each family's verdict, the test int8 must pass
before it may be a default.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from ragft.eval.tasks import load_tasks
from ragft.service import adapters, engine_ct2, models
from ragft.service.chunking import chunk_document
from ragft.service.documents import load_documents
from ragft.service.generation import Generator
from ragft.service.kinds import KINDS
from ragft.service.prompts import build_messages
from ragft.service.retrieval import Passage
from ragft.service.settings import Settings

GFLOP_PER_TOKEN = 0.27
FP32_GFLOPS = 100.0
FIXED_TOKENS = 216
MAX_NEW_TOKENS = 32


def prompt_sets(settings: Settings, gen: Generator, corpus: Path, n_short: int, n_rag: int, n_fixed: int) -> dict:
    """Named lists of chat prompts, built from the corpus's test questions and documents."""
    from transformers import AutoTokenizer

    rows = [r for r in load_tasks(corpus) if r.split == "test" and r.family == "knowledge"]
    phrase = settings.generation.abstention_phrase
    short = [build_messages(r.question, abstention_phrase=phrase) for r in rows[:n_short]]

    embed_tok = AutoTokenizer.from_pretrained(models.resolve_embedder(settings.models))
    r = settings.retrieval
    chunks = {d.doc_id: chunk_document(d, embed_tok, r.chunk_tokens, r.chunk_overlap) for d in load_documents(corpus)}
    pool = [c for cs in chunks.values() for c in cs]
    rag = []
    for i, row in enumerate(rows[:n_rag]):
        own = [c for d in row.source_docs for c in chunks.get(d, [])][:1]
        others = [pool[(7 * i + j) % len(pool)] for j in range(r.top_k - len(own))]
        passages = [Passage(c.chunk_id, c.doc_id, c.text, 0.0, c.start_char, c.end_char) for c in own + others]
        rag.append(build_messages(row.question, passages=passages, abstention_phrase=phrase))

    words = " ".join(d.text for d in load_documents(corpus)).split()
    fixed = []
    for i in range(n_fixed):
        window = " ".join(words[(i * 400 + k) % len(words)] for k in range(400))  # 400 words: >216 tokens
        ids = gen.tokenizer(window, add_special_tokens=False)["input_ids"]
        lo, hi = 0, len(ids)  # the longest document slice whose rendered prompt fits in FIXED_TOKENS
        while lo < hi:
            mid = (lo + hi + 1) // 2
            body = gen.tokenizer.decode(ids[:mid]) + "\nSummarise this in one sentence."
            lo, hi = (
                (mid, hi) if gen.count_tokens([{"role": "user", "content": body}]) <= FIXED_TOKENS else (lo, mid - 1)
            )
        fixed.append(
            [{"role": "user", "content": gen.tokenizer.decode(ids[:lo]) + "\nSummarise this in one sentence."}]
        )
    return {"short": short, "rag": rag, f"fixed{FIXED_TOKENS}": fixed}


def timed(gen, prompts, one_at_a_time: bool = False) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = (
        [gen.generate([p], MAX_NEW_TOKENS)[0] for p in prompts]
        if one_at_a_time
        else gen.generate(prompts, MAX_NEW_TOKENS)
    )
    return out, time.perf_counter() - t0


def headline_shift(first: Path, second: Path) -> None:
    """Per family and arm: headline in each run, difference, and the first run's 95% interval half-width."""
    runs = [json.loads(((p / "results.json") if p.is_dir() else p).read_text()) for p in (first, second)]
    names = [f"{r['models']['engine']['engine']} {r['models']['engine']['compute_type']}" for r in runs]
    print(f"\nheadlines: {runs[0]['run_id']} ({names[0]}) against {runs[1]['run_id']} ({names[1]})")
    print(f"{'family':22s} {'arm':9s} {names[0]:>22s} {names[1]:>22s} {'diff':>7s} {'half-width':>10s}")
    moved, largest, verdicts = 0, (0.0, ""), []
    for family, a in runs[0]["families"].items():
        b = runs[1]["families"].get(family)
        if b is None:
            continue
        metric = a["headline_metric"]
        for arm, scores in a["arms"].items():
            x, y = scores.get(metric), b["arms"].get(arm, {}).get(metric)
            if not x or not y or x.get("value") is None or y.get("value") is None:
                continue
            diff, half = y["value"] - x["value"], (x["ci_high"] - x["ci_low"]) / 2
            flag = "" if abs(diff) <= half else "  MOVED beyond the half-width"
            moved += bool(flag)
            if half and abs(diff) / half > largest[0]:
                largest = (abs(diff) / half, f"{arm} on {family}: {diff:+.3f} against {half:.3f}")
            print(f"{family:22s} {arm:9s} {x['value']:22.3f} {y['value']:22.3f} {diff:+7.3f} {half:10.3f}{flag}")
        va, vb = a["verdict"], b["verdict"]
        if (va["status"], va["recommended"]) != (vb["status"], vb["recommended"]):
            verdicts.append(f"{family}: {va['status']} ({va['recommended']}) -> {vb['status']} ({vb['recommended']})")
    print(f"{moved} headline(s) moved by more than the interval half-width; largest relative move: {largest[1]}")
    print("verdicts that changed:" if verdicts else "no verdict changed")
    for line in verdicts:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--rag", type=int, default=8)
    parser.add_argument("--fixed", type=int, default=16)
    parser.add_argument("--no-lora", action="store_true")
    parser.add_argument("--headlines", nargs=2, type=Path, metavar=("FIRST", "SECOND"),
                        help="two runs (report folders or results.json) of the same rows in two compute types")  # fmt: skip
    parser.add_argument("--only-headlines", action="store_true", help="skip the speed measurements")
    args = parser.parse_args()
    if args.only_headlines:
        headline_shift(*args.headlines)
        return

    settings = Settings()
    print(f"threads: torch {models.cpu_threads(settings.models)}, CTranslate2 {settings.models.ct2_intra_threads} per "
          f"batch x {engine_ct2.replicas(settings.models)} replicas; max_new_tokens {MAX_NEW_TOKENS}; greedy; "
          f"batch_size {settings.generation.batch_size}, max_batch_tokens {settings.generation.max_batch_tokens}")  # fmt: skip
    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    base = Generator(model, tokenizer, model_id, settings.generation)
    sets = {
        k: v for k, v in prompt_sets(settings, base, args.corpus, args.short, args.rag, args.fixed).items() if v
    }  # --fixed 0 and the like: no empty set

    engines: dict[str, dict] = {"transformers-float32": {"base": base}}
    tmp = tempfile.TemporaryDirectory()
    lora = None
    trained = adapters.artifact_dir(settings, args.corpus, KINDS["lora"], "questions", 0)
    if not args.no_lora and adapters.stored_manifest(trained) is not None:
        lora = trained
        print(f"lora arm: the trained adapter at {trained}")
        fresh, _, _ = models.load_generator(settings.models, settings.artifact_dir)
        engines["transformers-float32"]["lora"] = Generator(
            adapters.attach_lora(fresh, tokenizer, lora, "lora"), tokenizer, model_id, settings.generation
        )
    elif not args.no_lora:
        print("lora arm: no trained adapter stored (run `ragft demo` first); a random rank-16 adapter")
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        lora = Path(tmp.name) / "bench" / "lora"
        fresh, _, _ = models.load_generator(settings.models, settings.artifact_dir)
        config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        peft_model = get_peft_model(fresh, config)
        with torch.no_grad():  # small random B, like a trained adapter's scale rather than an init's
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.01)
        peft_model.save_pretrained(lora)
        fresh, _, _ = models.load_generator(settings.models, settings.artifact_dir)  # get_peft_model wrapped the first
        peft_gen = Generator(
            adapters.attach_lora(fresh, tokenizer, lora, "lora"), tokenizer, model_id, settings.generation
        )
        engines["transformers-float32"]["lora"] = peft_gen
    for compute_type in ("float32", "int8"):
        s = settings.model_copy(
            update={
                "models": settings.models.model_copy(update={"engine": "ctranslate2", "compute_type": compute_type})
            }
        )
        t0 = time.perf_counter()
        engines[f"ctranslate2-{compute_type}"] = {"base": engine_ct2.generator(s, base, None)}
        print(
            f"ctranslate2 {compute_type} base: ready in {time.perf_counter() - t0:.1f} s (converted once, then cached)"
        )
        if lora is not None:
            t0 = time.perf_counter()
            engines[f"ctranslate2-{compute_type}"]["lora"] = engine_ct2.generator(s, base, lora)
            print(f"ctranslate2 {compute_type} lora: merged, converted and checked in {time.perf_counter() - t0:.1f} s")
    for name, gens in engines.items():
        for arm, gen in gens.items():
            if hasattr(gen, "folder"):
                a = json.loads((gen.folder / engine_ct2.MANIFEST).read_text())["agreement"]
                print(f"  conversion check {name} {arm}: {a['identical_answers']}/{a['prompts']} sample answers "
                      f"identical to {a['reference']}")  # fmt: skip

    print(f"\n{'prompts':10s} {'arm':5s} {'engine':22s} {'n':>3s} {'prompt tok':>10s} {'gen tok':>7s} {'answers/s':>9s} "
          f"{'x tf32':>7s} {'prompt tok/s':>12s} {'% fp32 limit':>12s} {'agree':>6s} {'wall ms/ans':>11s} "
          f"{'latency split':>13s} {'machine ms':>10s}")  # fmt: skip
    limit = FP32_GFLOPS / GFLOP_PER_TOKEN
    for set_name, prompts in sets.items():
        arms = ["base", "lora"] if lora is not None and set_name == "short" else ["base"]
        for arm in arms:
            reference = None
            for name, gens in engines.items():
                gens[arm].generate(prompts[:1], 4)  # warm-up: first-call allocations are not the engine's speed
                out, seconds = timed(gens[arm], prompts)
                texts = [g.text for g in out]
                reference = reference or (texts, seconds)
                tokens = sum(g.prompt_tokens for g in out)
                agree = sum(a == b for a, b in zip(texts, reference[0], strict=True))
                print(f"{set_name:10s} {arm:5s} {name:22s} {len(out):3d} {tokens / len(out):10.0f} "
                      f"{sum(g.generated_tokens for g in out) / len(out):7.1f} "
                      f"{len(out) / seconds:9.2f} {reference[1] / seconds:7.2f} {tokens / seconds:12.0f} "
                      f"{100 * tokens / seconds / limit:11.0f}% {agree:3d}/{len(out)} {1000 * seconds / len(out):11.0f} "
                      f"{sum(g.latency_ms / g.batch_size for g in out) / len(out):13.0f} "
                      f"{sum(g.machine_ms / g.batch_size for g in out) / len(out):10.0f}")  # fmt: skip
                if set_name == "short" and arm == "base" and name == "ctranslate2-int8":
                    alone, seconds = timed(gens[arm], prompts, one_at_a_time=True)
                    same = sum(a.text == b for a, b in zip(alone, texts, strict=True))
                    print(f"{'':10s} {arm:5s} {name + ' one by one':22s} {len(alone):3d} {'':10s} {'':7s} "
                          f"{len(alone) / seconds:9.2f} {reference[1] / seconds:7.2f} {'':12s} {'':12s} "
                          f"{same:3d}/{len(alone)} identical to its batched answers")  # fmt: skip
    for gens in engines.values():  # the random adapter's conversions are of no further use
        if lora != trained and "lora" in gens and hasattr(gens["lora"], "folder"):
            shutil.rmtree(gens["lora"].folder, ignore_errors=True)
    tmp.cleanup()
    if args.headlines:
        headline_shift(*args.headlines)


if __name__ == "__main__":
    main()
