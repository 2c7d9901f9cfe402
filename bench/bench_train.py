"""Training cost on this machine: LoRA versus full fine-tuning, the demo artifacts, and tokens/s against the
float32 compute limit (about 125 trained tokens/s for SmolLM2-135M on these 2 cores).

Usage: python bench/bench_train.py [--steps 4] [--corpus corpora/quillmark] [--skip-demo] [--logits] [--memory]
                                   [--full-recipe]
--memory trains the questions adapter on quillmark plus 240 constructed short documents (a few of 732 words) for
`--steps` optimizer steps under several `lora` settings, each in its own process, and prints peak RSS (this run's,
VmHWM), RSS after the first and the last step, and tokens/s; compare them as ratios within one bench run.
--full-recipe trains each adapter `ragft train --corpus <corpus>` makes (every row, default settings), each in its
own process, for `--steps` steps with its planned steps reordered heaviest first (the longest examples), and prints
its peak RSS and the RSS after each step: the memory a whole run reaches, without the hours the whole run takes.
--logits times one rag_lora training step on real retrieved-passage examples with the LM head on every position
(the model's own loss) and on reply positions only (`ReplyLogitsTrainer`), and checks the two losses agree.
Each mode of the LoRA/full comparison runs in its own process so its peak memory is its own.
Prints figures and ratios only; asserts nothing (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from ragft.eval.tasks import load_tasks, supervised_rows
from ragft.service.settings import Settings


def one_mode(mode: str, corpus: Path, steps: int) -> dict:
    """Train `steps` optimizer steps on real closed-book examples with LoRA or with every weight trainable."""
    import torch
    from peft import LoraConfig, get_peft_model
    from ragft.service import models
    from ragft.service.finetune import tokenize_example
    from ragft.service.generation import Generator
    from ragft.service.training_data import closed_book_examples

    settings = Settings()
    torch.manual_seed(0)
    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    generator = Generator(model, tokenizer, model_id, settings.generation)
    rows = supervised_rows(load_tasks(corpus), settings.generation.abstention_phrase)
    examples = closed_book_examples(
        rows, paraphrases=0, seed=0, abstention_phrase=settings.generation.abstention_phrase
    )
    batch_size = settings.lora.batch_size
    batches = []
    for s in range(steps):
        items = [tokenize_example(generator, e, 256) for e in examples[s * batch_size : (s + 1) * batch_size]]
        width = max(len(t.input_ids) for t in items)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([t.input_ids + [pad] * (width - len(t.input_ids)) for t in items])
        labels = torch.tensor([t.labels + [-100] * (width - len(t.labels)) for t in items])
        mask = torch.tensor([[1] * len(t.input_ids) + [0] * (width - len(t.input_ids)) for t in items])
        batches.append((ids, labels, mask, sum(len(t.input_ids) for t in items)))
    if mode == "lora":
        lora = settings.lora
        config = LoraConfig(r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules, task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    tokens, t0 = 0, time.perf_counter()
    for ids, labels, mask, n in batches:
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += n
    seconds = time.perf_counter() - t0
    return {
        "mode": mode,
        "trainable_params": sum(p.numel() for p in params),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


# A forward and backward pass of a dense decoder costs about 6 FLOPs per parameter per token: SmolLM2-135M is
# ~0.81 GFLOP per trained token, so these 2 cores at ~100 GFLOP/s in float32 train at most ~125 tokens/s.
COMPUTE_LIMIT_GFLOPS = 100.0


def limit_tokens_per_s(params: int) -> float:
    return COMPUTE_LIMIT_GFLOPS * 1e9 / (6 * params)


def demo_adapters(corpus: Path) -> None:
    """The demo's artifacts (`ragft demo` settings: eval.demo_train_rows per family), trained again from scratch."""
    from ragft.eval.running import pipeline
    from ragft.service.finetune import describe
    from ragft.service.kinds import KINDS

    settings = pipeline.demo_settings(Settings())
    runtime = pipeline.open_runtime(settings, corpus)
    t0 = time.perf_counter()
    results = pipeline.train_artifacts(settings, runtime, list(KINDS.values()), force=True)
    total = time.perf_counter() - t0
    for kind_results in results.values():
        for result in kind_results:
            m = result.manifest
            print(describe(result))
            if m.tokens_per_s and m.total_params and not KINDS[result.kind].full_model:
                ratio = m.tokens_per_s / limit_tokens_per_s(m.total_params)
                print(f"  {m.tokens_per_s} tok/s = {ratio:.2f}x the float32 compute limit "
                      f"({limit_tokens_per_s(m.total_params):.0f} tok/s at {COMPUTE_LIMIT_GFLOPS:.0f} GFLOP/s)")  # fmt: skip
    print(f"demo artifacts (train rows per family {settings.lora.max_rows_per_family}, {settings.lora.epochs:g} "
          f"epochs): {total:.0f}s")  # fmt: skip


def reply_logits(corpus: Path, steps: int) -> None:
    """Seconds per rag_lora step with full logits against reply-only logits, on the demo's retrieved examples."""
    from peft import LoraConfig, get_peft_model
    from ragft.eval.running import pipeline
    from ragft.service.finetune import ReplyLogitsTrainer, build_training_set, tokenize_example
    from ragft.service.kinds import KINDS
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    settings = pipeline.demo_settings(Settings())
    runtime = pipeline.open_runtime(settings, corpus)
    if not runtime.index_ready:
        runtime.index()
    generator = runtime.generator()
    rows = [r for r in pipeline.training_rows(settings, load_tasks(corpus)) if r.family == "knowledge"]
    data = build_training_set(settings, corpus, KINDS["rag_lora"], rows, generator, runtime.retriever(), (), False)
    items = [tokenize_example(generator, e, settings.lora.max_seq_tokens) for e in data.train]
    lora = settings.lora
    config = LoraConfig(r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=0.0,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(generator.model, config)
    model.train()
    generator.tokenizer.padding_side = "right"
    collate = DataCollatorForSeq2Seq(generator.tokenizer, padding=True, label_pad_token_id=-100)
    size = 4
    batches = [collate([t.as_features() for t in items[i * size : (i + 1) * size]]) for i in range(steps)]
    trainer = ReplyLogitsTrainer(model=model, args=TrainingArguments(output_dir="/tmp/ragft-bench", use_cpu=True,
                                                                      report_to="none"))  # fmt: skip
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def full(batch, count):
        return model(**batch, num_items_in_batch=count).loss

    def reply(batch, count):
        return trainer.compute_loss(model, dict(batch), num_items_in_batch=count)

    seconds, losses = {}, {}
    for name, step in [("full logits", full), ("reply logits", reply)] * 2:  # second round counts (warm)
        t0, total = time.perf_counter(), 0.0
        for batch, count in zip(batches, counts, strict=True):
            loss = step(batch, count)
            loss.backward()
            model.zero_grad()
            total += loss.item()
        seconds[name], losses[name] = time.perf_counter() - t0, total
    for name in seconds:
        print(f"rag_lora {name}: {seconds[name] / steps:.2f} s/step, {tokens / seconds[name]:.0f} tok/s "
              f"({tokens / steps / size:.0f} tokens per example, batch {size}), summed loss {losses[name]:.4f}")  # fmt: skip
    print(f"reply-only logits: {seconds['full logits'] / seconds['reply logits']:.2f}x the tokens/s, loss difference "
          f"{abs(losses['full logits'] - losses['reply logits']):.2e}")  # fmt: skip


MEMORY_CONFIGS = {  # name -> lora settings: the token budget, checkpointing, and the cheaper-step levers
    "budget 512 (default)": {},
    "budget 1024": {"max_batch_tokens": 1024},
    "budget 512, checkpointing": {"gradient_checkpointing": True},
    "budget 512, dropout 0.05": {"dropout": 0.05},
    "budget 512, top 15 of 30 layers": {"top_layers": 15},
    "budget 512, mmap threshold 256 KiB": {"mmap_threshold_kib": 256},
}


def short_document_corpus(folder: Path, documents: int = 240) -> Path:
    """quillmark with `documents` constructed notes of about 130 words (every 50th: 732) added."""
    import random
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    for part in ("documents", "tasks"):
        shutil.copytree(Path("corpora/quillmark") / part, folder / part)
    rng = random.Random(0)
    words = ["the", "router", "ships", "with", "a", "dock", "and", "its", "battery", "lasts", "nine", "hours"]
    for i in range(documents):
        n = 732 if i % 50 == 0 else max(20, int(rng.gauss(130, 50)))
        (folder / "documents" / f"note-{i:04d}.txt").write_text(" ".join(rng.choices(words, k=n)) + ".\n")
    return folder


def train_steps(corpus: Path, steps: int, kind_name: str, group: str | None, lora: dict | None = None) -> list[dict]:
    """Train one adapter of `corpus` (default settings, `lora` overrides) in a fresh data folder, sharing the artifact
    folder (the de-quantised generator), until `steps` steps are done; per step its RSS, tokens seen, time, loss."""
    import tempfile

    from ragft.eval.running import pipeline
    from ragft.service.finetune import TrainingCancelled
    from ragft.service.kinds import KINDS
    from ragft.service.memory import rss_mib

    base = Settings()
    folder = Path(tempfile.mkdtemp(prefix="ragft-bench-train-"))
    settings = base.model_copy(update={"data_dir": folder, "artifact_dir": base.artifact_dir.resolve(),
                                       "lora": base.lora.model_copy(update=lora or {})})  # fmt: skip
    runtime = pipeline.open_runtime(settings, corpus)
    seen = []

    def progress(p):
        seen.append({"rss_mib": rss_mib(), "tokens": p.tokens_seen, "elapsed_s": p.elapsed_s, "loss": p.loss})

    with contextlib.suppress(TrainingCancelled):  # stopped after `steps` steps
        pipeline.train_artifacts(settings, runtime, [KINDS[kind_name]], progress=progress, force=True,
                                 groups={group} if group else None, should_stop=lambda: len(seen) >= steps)  # fmt: skip
    return seen


def tokens_per_s(seen: list[dict]) -> float | None:
    """Tokens a second from the first recorded step to the last (the first step's start-up left out)."""
    first, last = seen[0], seen[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return round((last["tokens"] - first["tokens"]) / seconds, 1) if seconds > 0 else None


def memory_run(corpus: Path, steps: int, lora: dict) -> dict:
    """Train the questions adapter (70 knowledge rows, the documents) for `steps` steps; memory and speed."""
    from ragft.service.memory import rss_mib

    seen = train_steps(corpus, steps, "lora", "questions", {"max_rows_per_family": 70, **lora})
    return {"steps": len(seen), "peak_rss_mib": round(rss_mib("VmHWM")), "rss_first_step_mib": round(seen[0]["rss_mib"]),
            "rss_last_step_mib": round(seen[-1]["rss_mib"]), "tokens_per_s": tokens_per_s(seen),
            "losses": [s["loss"] for s in seen]}  # fmt: skip


def memory(steps: int) -> None:
    corpus = short_document_corpus(Path("/tmp/ragft-bench-short-documents"))
    figures = {}
    for name, lora in MEMORY_CONFIGS.items():
        cmd = [sys.executable, __file__, "--memory-run", json.dumps(lora), "--steps", str(steps),
               "--corpus", str(corpus)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        figures[name] = json.loads(out.strip().splitlines()[-1])
        f = figures[name]
        print(f"{name}: peak RSS {f['peak_rss_mib']:,} MiB, RSS after step 1 / {f['steps']}: "
              f"{f['rss_first_step_mib']:,} / {f['rss_last_step_mib']:,} MiB, {f['tokens_per_s']} tok/s", flush=True)  # fmt: skip
    first = next(iter(figures.values()))
    for name, f in figures.items():
        same = "the same losses" if f["losses"] == first["losses"] else "other losses"
        print(f"{name}: {f['peak_rss_mib'] / first['peak_rss_mib']:.2f}x the peak RSS, "
              f"{f['tokens_per_s'] / first['tokens_per_s']:.2f}x the tokens/s of the default, {same}")  # fmt: skip


def heaviest_steps_first(original):
    """`finetune.training_stream` with its planned steps reordered, the ones holding the longest examples first, so
    a few steps meet the heaviest passes of a whole run (the examples, their sub-batches and epochs unchanged)."""
    from ragft.service.finetune import step_shape

    def stream(kind, data, generator, settings):
        planned, train_tok, val_tok = original(kind, data, generator, settings)
        lora = settings.lora
        size, accum = step_shape(len(planned), lora.batch_size, lora.grad_accum, lora.min_steps)
        steps = [planned[i : i + size * accum] for i in range(0, len(planned), size * accum)]
        steps.sort(key=lambda step: -max(len(t.input_ids) for t in step))
        return [t for step in steps for t in step], train_tok, val_tok

    return stream


def full_recipe_run(corpus: Path, steps: int, kind_name: str, group: str | None) -> dict:
    """The first `steps` steps, heaviest first, of one adapter `ragft train --corpus <corpus>` trains (every row,
    default settings); memory and speed."""
    from ragft.service import finetune
    from ragft.service.memory import rss_mib

    planned = {}
    reordered = heaviest_steps_first(finetune.training_stream)

    def recorded(kind, data, generator, settings):
        stream, train_tok, val_tok = reordered(kind, data, generator, settings)
        lengths = [len(t.input_ids) for t in stream]
        planned.update(examples=len(stream), longest_tokens=max(lengths), tokens=sum(lengths),
                       over_budget=sum(n > settings.lora.max_batch_tokens for n in lengths))  # fmt: skip
        return stream, train_tok, val_tok

    finetune.training_stream = recorded  # this process trains this one adapter only
    seen = train_steps(corpus, steps, kind_name, group)
    return {"adapter": f"{kind_name}/{group}" if group else kind_name, "steps": len(seen), **planned,
            "peak_rss_mib": round(rss_mib("VmHWM")), "rss_mib_per_step": [round(s["rss_mib"]) for s in seen],
            "tokens_per_s": tokens_per_s(seen)}  # fmt: skip


FULL_RECIPE = [("lora", "questions"), ("lora", "behaviour"), ("rag_lora", "questions"), ("rag_lora", "behaviour"),
               ("scratch", None)]  # fmt: skip


def full_recipe(corpus: Path, steps: int) -> None:
    """Each adapter of `ragft train` on every row, in its own process: its heaviest steps' peak RSS."""
    for kind_name, group in FULL_RECIPE:
        cmd = [sys.executable, __file__, "--full-recipe-run", json.dumps([kind_name, group]), "--steps", str(steps),
               "--corpus", str(corpus)]  # fmt: skip
        f = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(f"{f['adapter']}: {f['examples']:,} planned examples ({f['tokens']:,} tokens; longest {f['longest_tokens']:,}, "
              f"{f['over_budget']} over the pass budget); heaviest {f['steps']} steps: peak RSS {f['peak_rss_mib']:,} MiB, "
              f"RSS after each step {f['rss_mib_per_step']} MiB, {f['tokens_per_s']} tok/s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mode", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--logits", action="store_true", help="only the reply-logits comparison")
    parser.add_argument("--memory", action="store_true", help="only peak RSS and tokens/s per lora setting")
    parser.add_argument("--memory-run", help=argparse.SUPPRESS)
    parser.add_argument(
        "--full-recipe",
        action="store_true",
        help="only the heaviest --steps steps of each adapter `ragft train` trains on every row",
    )
    parser.add_argument("--full-recipe-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        print(json.dumps(memory_run(args.corpus, args.steps, json.loads(args.memory_run))))
        return
    if args.memory:
        memory(args.steps)
        return
    if args.full_recipe_run:
        print(json.dumps(full_recipe_run(args.corpus, args.steps, *json.loads(args.full_recipe_run))))
        return
    if args.full_recipe:
        full_recipe(args.corpus, args.steps)
        return
    if args.logits:
        reply_logits(args.corpus, args.steps)
        return
    if args.mode:
        print(json.dumps(one_mode(args.mode, args.corpus, args.steps)))
        return
    figures = {}
    for mode in ("lora", "full"):
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--corpus", str(args.corpus)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        figures[mode] = json.loads(out.strip().splitlines()[-1])
        print(figures[mode])
    lora, full = figures["lora"], figures["full"]
    limit = limit_tokens_per_s(full["trainable_params"])
    for mode in (lora, full):
        print(f"{mode['mode']}: {mode['tokens_per_s'] / limit:.2f}x the float32 compute limit ({limit:.0f} tok/s)")
    print(f"LoRA vs full fine-tuning: {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x the tokens/s, "
          f"{lora['peak_rss_mib'] / full['peak_rss_mib']:.2f}x the peak memory, "
          f"{lora['trainable_params'] / full['trainable_params']:.4f}x the trainable parameters")  # fmt: skip
    if not args.skip_demo:
        demo_adapters(args.corpus)


if __name__ == "__main__":
    main()
