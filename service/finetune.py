"""Training one artifact (a LoRA adapter, or the from-scratch model) with the transformers `Trainer`.

The transformers `Trainer` runs on CPU in float32 here; TRL's `SFTTrainer` would add only
assistant-only loss, which needs `{% generation %}` markers that SmolLM2's chat template
lacks, so labels are masked here instead (prompt tokens get -100, the reply and its
end-of-turn token are learnt). Each run trains on a planned stream: `lora.epochs` passes over
its rows (cut at an optional loss-token cap), documents interleaved as plain text where the
kind learns them, batches grouped by length so little padding is trained. The manifest says
per family how many epochs were reached. The same inputs (base weights, data,
hyperparameters, seed, recipe) reuse the stored artifact; a new one replaces the old only
once it is complete.

Example:
    >>> # ragft train --corpus corpora/quillmark --arm lora
    >>> # result = train_artifact(settings, corpus, "lora", rows, group="behaviour", forbidden_inputs=test_texts)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from ragft.service import adapters, folders, models
from ragft.service.documents import load_documents
from ragft.service.generation import Generator
from ragft.service.kinds import Kind, parse_kind
from ragft.service.memory import release_freed_memory, reset_peak_rss, rss_mib, tensors_returned_on_free
from ragft.service.settings import Settings
from ragft.service.training_data import SupervisedRow, TrainingExample, data_hash, split_validation
from torch.utils.checkpoint import checkpoint
from transformers import Trainer, TrainerCallback

log = logging.getLogger(__name__)

# Bumped whenever the training procedure changes what an artifact learns, so stored artifacts are retrained
# instead of reused. 2: warm-up rounded down (a 1-step run trained nothing; short runs lost their first step).
# 3: epoch budgets, adapter groups, corpus rewordings, document text in the knowledge adapter, RAFT as published.
# 4: small training sets take smaller batches (lora.min_steps updates at least).
# 5: steps split under a token budget (exactly the big batch's update), so long examples no longer shrink a
# step's batch; LoRA on the top `lora.top_layers` layers when set.
RECIPE_VERSION = 5
MAX_TRUNCATED_SHARE = 0.05  # examples that may lose their system message before a run refuses to train


def distributed(settings: Settings):
    """accelerate's process state when this process is one of several launched by `torchrun` or `accelerate
    launch` (WORLD_SIZE > 1; gloo on CPUs, NCCL on GPUs), else None. Every process trains the same stream, each on
    its share of every step's examples (`process_share`); the first one writes the artifact."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=settings.models.device == "cpu")


class TrainingDataError(ValueError):
    """Nothing to train on: the message says which rows are missing."""


class TrainingCancelled(RuntimeError):
    """A caller asked the run to stop; nothing was stored and the previous artifact is untouched."""


@dataclass(frozen=True)
class TrainProgress:
    """What a progress bar or a job status shows while training."""

    kind: str
    step: int
    max_steps: int
    loss: float | None
    val_loss: float | None
    tokens_seen: int
    tokens_per_s: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class TrainResult:
    kind: str
    folder: Path
    manifest: adapters.AdapterManifest
    reused: bool
    group: str | None = None  # the adapter group (eval/families.py) it serves; None: one artifact for all rows
    replicate: int = 0  # training seed offset (eval.training_seeds)


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    row_id: str
    family: str = ""  # the task family it came from ("" for document text)
    truncated: bool = False  # the prompt lost tokens from the left, the system message first

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != -100)

    def as_features(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": [1] * len(self.input_ids), "labels": self.labels}


def tokenize_example(generator: Generator, example: TrainingExample, max_tokens: int) -> Tokenized:
    """Prompt tokens masked with -100, reply + end-of-turn learnt; long prompts lose tokens from the left."""
    tok = generator.tokenizer
    reply = tok(example.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    prompt = tok(generator.render(example.messages), add_special_tokens=False)["input_ids"]
    reply = reply[: max_tokens // 2] if len(reply) > max_tokens // 2 else reply
    kept = prompt[-(max_tokens - len(reply)) :]
    return Tokenized(kept + reply, [-100] * len(kept) + reply, example.row_id, example.family, len(kept) < len(prompt))


def plan_stream(
    items: list[Tokenized], epochs: float, budget: int | None, batch_size: int, seed: int, count=None
) -> list[Tokenized]:
    """Epochs of seeded shuffles cut at a budget, grouped by length within mega-batches (less padding).

    `count` says what the budget counts per item (default: every token; training caps loss-bearing tokens)."""
    if not items:
        return []
    count = count or (lambda t: len(t.input_ids))
    rng = random.Random(f"{seed}:stream")
    per_epoch = sum(count(t) for t in items)
    limit = min(epochs * per_epoch, budget or math.inf)
    stream, used = [], 0
    while used < limit:
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in order:
            if used >= limit:
                break
            stream.append(items[i])
            used += count(items[i])
        if per_epoch == 0:
            break
    mega = batch_size * 16
    grouped = []
    for start in range(0, len(stream), mega):
        grouped.extend(sorted(stream[start : start + mega], key=lambda t: -len(t.input_ids)))
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return [t for b in batches for t in b]


def scratch_config(base_config, settings: Settings):
    """The generator's architecture, shrunk: same tokenizer and vocabulary, fewer and narrower layers."""
    s = settings.scratch
    config = copy.deepcopy(base_config)
    ratio = config.intermediate_size / config.hidden_size if hasattr(config, "intermediate_size") else 4
    config.num_hidden_layers = s.layers
    config.hidden_size = s.hidden_size
    config.intermediate_size = int(s.hidden_size * ratio)
    config.num_attention_heads = s.heads
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = s.heads
    if hasattr(config, "head_dim"):
        config.head_dim = s.hidden_size // s.heads
    for attr in ("quantization_config", "layer_types"):
        if hasattr(config, attr):
            delattr(config, attr)
    return config


def document_pieces(generator: Generator, corpus: Path, max_tokens: int) -> list[Tokenized]:
    """The corpus documents as plain language-modelling text cut into windows, for the scratch baseline."""
    pieces = []
    for doc in load_documents(Path(corpus) / "documents"):
        ids = generator.tokenizer(doc.text, add_special_tokens=False)["input_ids"] + [generator.tokenizer.eos_token_id]
        for start in range(0, len(ids), max_tokens):
            window = ids[start : start + max_tokens]
            pieces.append(Tokenized(window, list(window), f"doc:{doc.doc_id}"))
    return pieces


class ProgressCallback(TrainerCallback):
    """Reports progress (a tqdm bar and/or a job's callback) and honours cancellation between steps."""

    def __init__(self, kind, report, should_stop, show_bar):
        self.kind, self.report, self.should_stop = kind, report, should_stop
        self.show_bar, self.bar, self.start = show_bar, None, 0.0
        self.loss = self.val_loss = None
        self.losses: list[float] = []
        self.rss_mib: list[float] = []  # resident memory after each step, freed memory handed back: flat or not
        self.cancelled = False

    def on_train_begin(self, args, state, control, **kw):
        self.start = time.perf_counter()
        if self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc=f"train {self.kind}", unit="step")

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
            self.losses.append(self.loss)
        if "eval_loss" in logs:
            self.val_loss = float(logs["eval_loss"])

    def on_step_end(self, args, state, control, **kw):
        release_freed_memory()
        self.rss_mib.append(round(rss_mib(), 1))
        elapsed = time.perf_counter() - self.start
        tokens = int(state.num_input_tokens_seen or 0)
        rate = tokens / elapsed if elapsed else 0.0
        eta = elapsed / state.global_step * (state.max_steps - state.global_step) if state.global_step else 0.0
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            postfix = {"loss": f"{self.loss:.3f}" if self.loss is not None else "-", "tok/s": f"{rate:.0f}"}
            if self.val_loss is not None:
                postfix["val"] = f"{self.val_loss:.3f}"
            self.bar.set_postfix(postfix)
        if self.report is not None:
            self.report(
                TrainProgress(
                    self.kind, state.global_step, state.max_steps, self.loss, self.val_loss, tokens, rate, elapsed, eta
                )
            )
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# lora settings that change where tensors live or how a step is split, never the weights trained
MEMORY_ONLY = {"mmap_threshold_kib", "size_batches_to_memory"}
BY_GROUP = {"learning_rate_by_group", "epochs_by_group"}  # resolved into learning_rate and epochs per adapter


def hyperparameters(settings: Settings, kind: Kind, group: str | None = None) -> dict:
    """The settings a run depends on; part of the reuse key and the manifest. The learning rate and epochs are the
    ones this adapter trains with (`LoraSettings.for_group`), so a value set for another group retrains nothing."""
    lora = settings.lora.for_group(kind.name, group).model_dump(exclude=MEMORY_ONLY | BY_GROUP)
    params = {"lora": lora, "seed": settings.generation.seed}  # the shared training loop
    if mixed_precision(settings):  # bf16 autocast learns other weights than float32 (absent: float32, as before)
        params["precision"] = mixed_precision(settings)
    if kind.needs_index:
        params["retrieval"] = settings.retrieval.model_dump(exclude={"embed_batch_size"})
        params["embedder"] = settings.models.embedder
    if kind.settings_group not in params:  # a group beyond the shared loop's (scratch's architecture and budget)
        params[kind.settings_group] = getattr(settings, kind.settings_group).model_dump()
    return params


@dataclass(frozen=True)
class TrainingSet:
    """Everything a run learns from, and the hash that decides whether a stored artifact can be reused."""

    examples: list[TrainingExample]
    train: list[TrainingExample]
    validation: list[TrainingExample]
    documents: list[Tokenized]
    data_hash: str


def build_training_set(
    settings: Settings,
    corpus: Path,
    kind: Kind,
    rows: list[SupervisedRow],
    generator: Generator,
    retriever,
    forbidden,
    with_documents: bool,
) -> TrainingSet:
    """The kind's examples from the train rows, its validation split, and the corpus documents it learns as text."""
    if kind.needs_index and retriever is None:
        raise TrainingDataError(f"the {kind.name} artifact trains on retrieved passages: build the index first")
    examples = kind.examples(rows, settings, retriever, set(forbidden))
    train, validation = split_validation(
        examples, settings.lora.validation_fraction, settings.generation.seed, settings.lora.max_validation_examples
    )
    documents = document_pieces(generator, corpus, settings.lora.max_seq_tokens) if with_documents else []
    dhash = data_hash(examples)
    if documents:
        dhash = hashlib.sha256((dhash + str([t.input_ids for t in documents])).encode()).hexdigest()
    return TrainingSet(examples, train, validation, documents, dhash)


def fingerprint(kind: Kind, model_id: str, base_hash: str, dhash: str, params: dict) -> str:
    """The reuse key: the same base weights, data, settings and recipe give the same artifact."""
    key = [kind.name, model_id, base_hash, dhash, params, RECIPE_VERSION]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def trainable_model(kind: Kind, base_model, settings: Settings):
    """What the run updates, and its peak learning rate, as the kind's settings group trains it (`RECIPES`)."""
    return RECIPES[kind.settings_group].model(base_model, settings)


def scratch_model(base_model, settings: Settings):
    """The shrunk architecture from random weights, and scratch's learning rate."""
    from transformers import AutoModelForCausalLM

    with models.LOADING:
        model = AutoModelForCausalLM.from_config(scratch_config(base_model.config, settings))
    return model.to(base_model.device), settings.scratch.learning_rate


def lora_model(base_model, settings: Settings):
    """The base model wrapped in a fresh LoRA adapter, and the adapter's learning rate."""
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    depth = base_model.config.num_hidden_layers
    top, targets = None, lora.target_modules
    if lora.top_layers and lora.top_layers < depth:
        top = list(range(depth - lora.top_layers, depth))
        if targets == "all-linear":  # peft takes a layer range only with module names: every linear but the head
            head = base_model.get_output_embeddings()
            targets = sorted({name.rsplit(".", 1)[-1] for name, m in base_model.named_modules()
                              if isinstance(m, torch.nn.Linear) and m is not head})  # fmt: skip
    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout, target_modules=targets,
        layers_to_transform=top, task_type="CAUSAL_LM",
    )  # fmt: skip
    with models.LOADING:
        return get_peft_model(base_model, config), lora.learning_rate


def training_stream(kind: Kind, data: TrainingSet, generator: Generator, settings: Settings):
    """(planned stream, tokenized train examples, validation examples): the settings' epochs over the rows (cut at
    the loss-token cap), documents interleaved; refuses when prompts would lose their system message."""
    lora = settings.lora
    train_tok = [tokenize_example(generator, e, lora.max_seq_tokens) for e in data.train]
    val_tok = [tokenize_example(generator, e, lora.max_seq_tokens) for e in data.validation]
    cut = [t for t in train_tok + val_tok if t.truncated]
    if len(cut) > MAX_TRUNCATED_SHARE * len(train_tok + val_tok):
        raise TrainingDataError(
            f"{len(cut)} of {len(train_tok + val_tok)} {kind.name} examples are longer than lora.max_seq_tokens="
            f"{lora.max_seq_tokens} and would lose their system message (more than {MAX_TRUNCATED_SHARE:.0%}): raise "
            "RAGFT_LORA__MAX_SEQ_TOKENS, or shorten the prompts (retrieval.top_k, retrieval.chunk_tokens)"
        )
    return RECIPES[kind.settings_group].stream(train_tok, data.documents, settings), train_tok, val_tok


def lora_stream(train_tok: list[Tokenized], documents: list[Tokenized], settings: Settings) -> list[Tokenized]:
    """lora.epochs over the rows (cut at the loss-token cap), lora.document_epochs of the documents, interleaved."""
    lora = settings.lora
    seed, b = settings.generation.seed, lora.batch_size
    supervised = plan_stream(train_tok, lora.epochs, lora.max_loss_tokens, b, seed, count=lambda t: t.loss_tokens)
    documents = plan_stream(documents, lora.document_epochs, None, b, seed + 1) if lora.document_epochs else []
    return plan_stream(supervised + documents, 1, None, b, seed + 2)


def scratch_stream(train_tok: list[Tokenized], documents: list[Tokenized], settings: Settings) -> list[Tokenized]:
    """scratch.epochs over the rows, documents making up scratch.document_share of the tokens, cut at the budget."""
    scratch, seed, b = settings.scratch, settings.generation.seed, settings.lora.batch_size
    supervised = plan_stream(train_tok, scratch.epochs, None, b, seed)
    share = scratch.document_share if documents else 0.0
    doc_tokens = int(sum(len(t.input_ids) for t in supervised) * share / (1 - share)) if share < 1 else 0
    mixed = supervised + plan_stream(documents, math.inf, doc_tokens, b, seed + 1)
    return plan_stream(mixed, 1, scratch.token_budget, b, seed + 2)  # interleave, so no run ends on one kind


@dataclass(frozen=True)
class Recipe:
    """How the kinds a settings group configures (`Kind.settings_group`) train: what a run updates and its
    learning rate (base model, settings) -> (model, rate), and the planned stream (tokenized train examples,
    document windows, settings) -> stream. A kind configured by a group here is one entry in `ragft.service.kinds.KINDS`."""

    model: Callable
    stream: Callable[[list[Tokenized], list[Tokenized], Settings], list[Tokenized]]


RECIPES = {"lora": Recipe(lora_model, lora_stream), "scratch": Recipe(scratch_model, scratch_stream)}


def stream_figures(stream: list[Tokenized], train_tok: list[Tokenized], documents: list[Tokenized], settings) -> dict:
    """Per family (and the documents): examples per epoch, epochs reached, loss-bearing tokens; whether any
    family got less than one epoch, and the loss tokens the configured epochs of every family would take."""
    per_epoch = Counter(t.family for t in train_tok)
    seen = Counter(t.family for t in stream if not t.row_id.startswith("doc:"))
    loss = Counter()
    for t in stream:
        loss[t.family or "documents"] += t.loss_tokens
    families = {
        f: {"examples": n, "epochs_reached": round(seen[f] / n, 3), "loss_tokens": loss[f]}
        for f, n in sorted(per_epoch.items())
    }
    if documents:
        windows = sum(1 for t in stream if t.row_id.startswith("doc:"))
        families["documents"] = {"examples": len(documents), "epochs_reached": round(windows / len(documents), 3),
                                 "loss_tokens": loss["documents"]}  # fmt: skip
    full = settings.lora.epochs * sum(t.loss_tokens for t in train_tok)
    undertrained = any(v["epochs_reached"] < 1 for f, v in families.items() if f != "documents")
    return {"families": families, "undertrained": undertrained, "loss_tokens_for_configured_epochs": int(full),
            "truncated_examples": sum(t.truncated for t in train_tok)}  # fmt: skip


def train_artifact(
    settings: Settings,
    corpus: Path,
    kind: Kind | str,
    rows: list[SupervisedRow],
    *,
    group: str | None = None,
    replicate: int = 0,
    retriever=None,
    with_documents: bool | None = None,
    forbidden_inputs: set[str] = frozenset(),
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bar: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train (or reuse) the `kind` artifact for `corpus` (and adapter `group`) from its supervised train rows.

    `retriever` searches the corpus index (kinds whose examples carry passages need it); `with_documents`
    mixes the corpus documents in as plain text (default: the kind's fact). `replicate` i > 0 trains the same
    recipe with seed + i into a folder of its own (eval.training_seeds: seed-to-seed variance)."""
    from transformers import set_seed

    kind = parse_kind(kind) if isinstance(kind, str) else kind
    if replicate:
        generation = settings.generation.model_copy(update={"seed": settings.generation.seed + replicate})
        settings = settings.model_copy(update={"generation": generation})
    if not rows:
        raise TrainingDataError(
            f'corpus \'{Path(corpus).name}\' has no train rows to learn from: add rows with "split": "train" '
            "(knowledge, behaviour or abstention) to its tasks/*.jsonl"
        )
    documents = kind.with_documents if with_documents is None else with_documents
    seed = settings.generation.seed
    set_seed(seed)
    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    generator = Generator(model, tokenizer, model_id, settings.generation)
    base_hash = models.weights_hash(model)
    data = build_training_set(settings, corpus, kind, rows, generator, retriever, forbidden_inputs, documents)
    params = hyperparameters(settings, kind, group) | {"group": group, "documents": documents}
    key = fingerprint(kind, model_id, base_hash, data.data_hash, params)
    folder = adapters.artifact_dir(settings, corpus, kind, group, replicate)
    note = folders.recover(folder, lambda f: (f / adapters.MANIFEST).is_file(), f"{kind.name} artifact")
    if note:
        log.warning(note)  # a training run killed mid-swap, or the leftovers of dead runs
    stored = adapters.stored_manifest(folder)
    if not force and stored is not None and stored.fingerprint == key:
        log.info("reusing %s artifact at %s (same base model, data, settings and seed)", kind.name, folder)
        return TrainResult(kind.name, folder, stored, reused=True, group=group, replicate=replicate)

    settings = settings.model_copy(update={"lora": settings.lora.for_group(kind.name, group)})  # this group's
    stream, train_tok, val_tok = training_stream(kind, data, generator, settings)
    figures = stream_figures(stream, train_tok, data.documents, settings)
    set_seed(seed)
    train_model, learning_rate = trainable_model(kind, model, settings)
    label = f"{kind.name}/{group}" if group else kind.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    state = distributed(settings)
    main = state is None or state.is_main_process
    work = folders.new_build(folder) if main else None  # checkpoints, then the artifact, then swapped in whole
    if state is not None:  # one build folder for all: the checkpoint the best model is loaded back from is shared
        from accelerate.utils import broadcast_object_list

        work = Path(broadcast_object_list([str(work)])[0])
    try:
        outcome = _run_trainer(
            settings, label, train_model, tokenizer, stream, val_tok, learning_rate, work, progress, should_stop,
            show_bar,
        )  # fmt: skip
        if outcome["cancelled"]:
            raise TrainingCancelled(f"training {label} was cancelled; the stored artifact (if any) is unchanged")
        if not main:  # the first process writes and swaps in the artifact; the others return what it stored
            state.wait_for_everyone()
            return TrainResult(kind.name, folder, adapters.stored_manifest(folder), False, group, replicate)
        out = work
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the best one is loaded back; not part of the artifact
        train_model.save_pretrained(out, safe_serialization=True)
        if kind.full_model:
            tokenizer.save_pretrained(out)
        variants = dict(Counter(e.variant for e in data.examples))
        if data.documents:
            variants["document_window"] = len(data.documents)
        manifest = adapters.AdapterManifest(
            kind=kind.name,
            group=group,
            corpus=Path(corpus).resolve().name,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base_model=model_id,
            base_model_hash=base_hash,
            data_hash=data.data_hash,
            fingerprint=key,
            recipe_version=RECIPE_VERSION,
            hyperparameters=params,
            seed=seed,
            examples={
                "train": len(data.train),
                "validation": len(val_tok),
                "by_variant": variants,
                "rows": len(rows),
            },  # fmt: skip
            training=figures | {"memory": outcome["memory"]},
            tokens_planned=sum(len(t.input_ids) for t in stream),
            trainable_params=sum(p.numel() for p in train_model.parameters() if p.requires_grad),
            total_params=sum(p.numel() for p in train_model.parameters()),
            size_bytes=_dir_bytes(out),
            versions=models.library_versions(),
            **outcome["figures"],
        )
        manifest.write(out)  # last: a temp folder with a manifest is a complete artifact
        folders.swap_in(out, folder)
    except BaseException:
        if main:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if state is not None:
        state.wait_for_everyone()
    return TrainResult(kind.name, folder, manifest, reused=False, group=group, replicate=replicate)


class ReplyLogitsTrainer(Trainer):
    """A `Trainer` whose steps hold at most `lora.max_batch_tokens` tokens and never the full logits matrix.

    Each step's examples are split into sub-batches of at most `max_batch_tokens` padded tokens, each
    backpropagated alone, and every sub-batch's summed cross-entropy is divided by the whole step's loss-token
    count (transformers' `num_items_in_batch`), so the loss and gradients are one big batch's. The LM head runs
    only where a loss token is predicted, `LOSS_CHUNK_TOKENS` positions at a time, each chunk recomputed in the
    backward pass (torch.utils.checkpoint) so its logits are freed at once: a document window's 1,664 x 49k
    float32 logits (327 MB, three times that with their softmax and gradient) never exist. A sub-batch over the
    budget (one example longer than it) recomputes every n-th layer in the backward pass (`checkpoint_interval`),
    and every sub-batch every layer with `checkpoint_every_step` (lora.gradient_checkpointing); inputs never
    require gradients, so with LoRA on the top layers only the backward pass stops at the lowest adapted layer.
    Models that cannot be split into a decoder and an LM head (a head with logit scaling or soft-capping) train
    the standard way.
    """

    loss_is_scaled_for_ga = True  # normalised by the accumulated batch's reply tokens, like the model's loss

    def __init__(self, *args, max_batch_tokens: int | None = None, checkpoint_every_step: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_batch_tokens, self.checkpoint_every_step = max_batch_tokens, checkpoint_every_step

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs.get("labels")
        if num_items_in_batch is None and labels is not None:  # counted here so every sub-batch divides by it
            num_items_in_batch = (labels[:, 1:] != -100).sum() * self.current_gradient_accumulation_steps
        loss = None
        parts = split_batch(inputs, self.max_batch_tokens)
        for i, part in enumerate(parts):
            every = 1 if self.checkpoint_every_step else checkpoint_interval(part, self.max_batch_tokens)
            # Under DDP the gradients are averaged once per step, after its last sub-batch: processes split
            # their examples into different numbers of sub-batches, and every all-reduce must meet its peers.
            last = i == len(parts) - 1
            with activation_checkpointing(model, every), contextlib.nullcontext() if last else no_sync(model):
                part_loss = super().training_step(model, part, num_items_in_batch)
            loss = part_loss if loss is None else loss + part_loss
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        # A DistributedDataParallel wrapper only syncs gradients of a forward it ran itself, so under DDP the
        # model runs whole (the LM head over every position, the model's own loss, scaled as the Trainer scales).
        parts = None if isinstance(model, torch.nn.parallel.DistributedDataParallel) else decoder_and_head(model)
        if labels is None or parts is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        decoder, head = parts
        hidden = decoder(
            input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]  # position p predicts token p + 1
        where = targets != -100
        loss = chunked_cross_entropy(head, hidden[:, :-1][where], targets[where])
        if num_items_in_batch is not None:  # training: the accumulated batch's reply tokens, as the model divides
            loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # counted over every process: scaled as the Trainer
                # scales a model's own loss (validation under DDP comes here; training runs through the wrapper)
        else:  # validation: this batch's mean
            loss = loss / where.sum().clamp(min=1)
        return (loss, {"loss": loss}) if return_outputs else loss


def no_sync(model):
    """DDP's `no_sync` (gradients kept local until a pass outside it), or nothing for a model trained alone."""
    return model.no_sync() if isinstance(model, torch.nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


LOSS_CHUNK_TOKENS = 512  # positions per LM-head chunk: 512 x 49,152 float32 logits = 100 MB, freed before the next


def chunked_cross_entropy(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` against `targets` ([N, H] and [N]), `LOSS_CHUNK_TOKENS` rows at a
    time; with more than one chunk each is recomputed in the backward pass, so one chunk's logits exist at once."""

    def chunk_loss(h, t):
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    n, zero = hidden.shape[0], hidden[:0].sum()  # zero in the graph: a 1-token document tail predicts nothing
    if n <= LOSS_CHUNK_TOKENS or not torch.is_grad_enabled():
        return sum((chunk_loss(hidden[s : s + LOSS_CHUNK_TOKENS], targets[s : s + LOSS_CHUNK_TOKENS])
                    for s in range(0, n, LOSS_CHUNK_TOKENS)), zero)  # fmt: skip
    return sum((checkpoint(chunk_loss, hidden[s : s + LOSS_CHUNK_TOKENS], targets[s : s + LOSS_CHUNK_TOKENS],
                           use_reentrant=False) for s in range(0, n, LOSS_CHUNK_TOKENS)), zero)  # fmt: skip


def decoder_and_head(model):
    """(decoder, LM head) of the causal LM under any peft wrapper, when its logits are the head's output as is."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    if any(getattr(config, a, None) for a in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    return (decoder, head) if decoder is not None and decoder is not inner and head is not None else None


def split_batch(inputs: dict, max_tokens: int | None) -> list[dict]:
    """A right-padded batch as sub-batches of at most `max_tokens` padded tokens (rows grouped by length, each
    trimmed to its longest row); a row longer than the budget is a sub-batch of its own."""
    mask = inputs.get("attention_mask")
    if max_tokens is None or mask is None or mask.numel() <= max_tokens:
        return [inputs]
    lengths = mask.sum(dim=1).tolist()
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:  # longest first: a group's first row sets its width
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    parts = []
    for group in groups:
        rows, width = torch.tensor(group), int(lengths[group[0]])
        parts.append({k: v[rows, :width] if torch.is_tensor(v) and v.dim() == 2 else v for k, v in inputs.items()})
    return parts


def checkpoint_interval(part: dict, max_tokens: int | None) -> int | None:
    """Checkpoint every n-th layer of a sub-batch over the token budget, so the layers that keep their
    activations hold about the budget's worth: a 700-token example under a 512 budget recomputes a third of the
    layers (n = 3, about a tenth more compute), one of 1,024 every other layer, a longer one every layer. None:
    within the budget."""
    tokens = part["input_ids"].numel()
    if max_tokens is None or tokens <= max_tokens:
        return None
    return max(1, int(1 / (1 - max_tokens / tokens)))


@contextlib.contextmanager
def activation_checkpointing(model, every_n_layers: int | None):
    """Activation checkpointing on every n-th decoder layer for the duration (None: off), unless already on."""
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    supported = getattr(inner, "supports_gradient_checkpointing", False)
    if every_n_layers is None or not supported or inner.is_activation_checkpointing:
        yield
        return
    inner.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=every_n_layers)
    inner.disable_input_require_grads()  # non-reentrant checkpointing needs no input grads; backward stops lower
    try:
        yield
    finally:
        inner.activation_checkpointing_disable()


def step_shape(stream_len: int, batch_size: int, grad_accum: int, min_steps: int = 1) -> tuple[int, int]:
    """(examples per device step, accumulation steps): `batch_size` x `grad_accum` examples per update, shrunk
    where the stream would otherwise give fewer than `min_steps` updates. Tokens are bounded inside each step
    (`ReplyLogitsTrainer`), so long examples no longer change the shape."""
    effective = max(1, min(batch_size * grad_accum, stream_len // min_steps))
    per_device = min(batch_size, effective)
    return per_device, math.ceil(effective / per_device)


def process_share(per_device: int, accum: int, processes: int) -> tuple[int, int]:
    """(examples per process per device step, accumulation steps) so that `processes` data-parallel processes
    make the update one process makes with `per_device` x `accum` examples: each takes its share of every step's
    examples, or of its accumulation steps. Where neither divides, each process takes a rounded-up share and an
    update holds a few more examples (the loss is still the mean over every reply token of the update)."""
    if processes <= 1:
        return per_device, accum
    if per_device % processes == 0:
        return per_device // processes, accum
    if accum % processes == 0:
        return per_device, accum // processes
    log.warning("%d processes cannot share a step of %d x %d examples evenly: each takes %d", processes,
                per_device, accum, math.ceil(per_device / processes))  # fmt: skip
    return math.ceil(per_device / processes), accum


def padded_for_processes(stream: list[Tokenized], multiple: int, token: int) -> list[Tokenized]:
    """The stream filled up to a multiple of a step's examples across processes with one-token examples that
    learn nothing (label -100): a short last step would otherwise be filled with the stream's first examples
    (accelerate's even batches), and the update would no longer be the one process's."""
    filler = Tokenized([token], [-100], "pad:processes")
    return stream + [filler] * (-len(stream) % multiple)


def mixed_precision(settings: Settings) -> str | None:
    """'bf16' on a CUDA device that computes in bfloat16 (autocast; the weights and the optimizer stay float32),
    else None: CPUs without AVX512-BF16 ran bf16 matmuls ~300x slower, so CPU training stays float32."""
    device = settings.models.device
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return None


ACTIVATION_FLOATS = 30  # per token, layer and hidden unit kept for the backward pass: SmolLM2-135M (30 layers x
# 576) held 1.5-2 MiB per token in float32 (22.8-30.3 floats), so the upper end leaves room for the allocator
OPTIMIZER_BYTES = 16  # per trainable parameter: float32 weight, gradient and AdamW's two moments


def batch_tokens_for_memory(free_bytes: int, config, total_params: int, trainable_params: int,
                            activation_bytes: int = 4, headroom: float = 0.8, most: int = 65536) -> int:  # fmt: skip
    """The largest `lora.max_batch_tokens` (a multiple of 64) whose pass fits `headroom` of a device's free
    memory: what is left after the weights (float32) and the trainable parameters' gradients and optimizer state,
    at `ACTIVATION_FLOATS` x layers x hidden size activations per token (2 bytes each under bf16 autocast).

    Example:
        >>> # bf16, LoRA r16 on every linear layer: SmolLM2-135M with 80 GiB free: 65536 (the cap); SmolLM2-1.7B
        >>> # with 24 GiB free: 4544; Llama-3.1-8B with 80 GiB free: 4544
    """
    fixed = 4 * total_params + OPTIMIZER_BYTES * trainable_params
    per_token = ACTIVATION_FLOATS * config.num_hidden_layers * config.hidden_size * activation_bytes
    tokens = int((headroom * free_bytes - fixed) // per_token) // 64 * 64
    if tokens < 64:
        raise TrainingDataError(
            f"the device has {free_bytes / 2**30:.1f} GiB free, too little for this model's weights and optimizer "
            f"state ({fixed / 2**30:.1f} GiB) plus a 64-token pass: free memory, or turn off lora.size_batches_to_memory"
        )
    return min(tokens, most)


def device_free_bytes(device: str) -> int | None:
    """Free memory of a CUDA device now (torch.cuda.mem_get_info), or None for a CPU or another device."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def _run_trainer(settings, kind, model, tokenizer, stream, val, learning_rate, work, progress, should_stop, show_bar):
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, PrinterCallback, TrainingArguments

    lora = settings.lora
    if not stream:
        raise TrainingDataError(f"the {kind} training stream is empty (token budget 0 or no examples)")
    per_device, accum = step_shape(len(stream), lora.batch_size, lora.grad_accum, lora.min_steps)
    steps = math.ceil(len(stream) / (per_device * accum))
    state = distributed(settings)
    per_process, accum = process_share(per_device, accum, state.num_processes if state else 1)
    if state is not None and len(stream) % (per_process * state.num_processes):  # see `padded_for_processes`
        stream = padded_for_processes(stream, per_process * state.num_processes, tokenizer.eos_token_id)
    precision = mixed_precision(settings)
    max_batch_tokens = lora.max_batch_tokens
    free = device_free_bytes(models.torch_device(settings.models)) if lora.size_batches_to_memory else None
    if free is not None:
        params = list(model.parameters())
        max_batch_tokens = batch_tokens_for_memory(
            free, model.config, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad),
            activation_bytes=2 if precision else 4,
        )  # fmt: skip
    longest_val = max((len(t.input_ids) for t in val), default=1)  # validation batches fit the token budget too
    eval_batch = max(1, min(per_process, max_batch_tokens // longest_val))
    eval_steps = max(1, math.ceil(steps / lora.evals_per_run))
    validate = bool(val) and steps > 1
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=per_process,
        per_device_eval_batch_size=eval_batch,
        gradient_accumulation_steps=accum,
        learning_rate=learning_rate,
        num_train_epochs=1,  # the stream already holds the planned epochs
        lr_scheduler_type="linear",
        # 5% warm-up, rounded down: with a linear warm-up the first step's learning rate is 0, so a
        # run of a few steps (small budgets) would otherwise lose one of them and a 1-step run would train nothing.
        warmup_steps=int(0.05 * steps),
        logging_steps=1,
        log_level="warning",
        eval_strategy="steps" if validate else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if validate else "no",
        save_steps=eval_steps,
        save_total_limit=2,
        save_only_model=True,
        load_best_model_at_end=validate,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        train_sampling_strategy="sequential",  # plan_stream already shuffled and grouped by length
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        use_cpu=settings.models.device == "cpu",
        bf16=precision == "bf16",
        seed=settings.generation.seed,
        data_seed=settings.generation.seed,
        dataloader_num_workers=0,
        prediction_loss_only=True,  # validation needs its loss only, not every position's logits kept in memory
    )
    tokenizer.padding_side = "right"  # training: positions must start at 0 for every example
    callback = ProgressCallback(kind, progress, should_stop, show_bar)
    callbacks = [callback] + ([EarlyStoppingCallback(lora.early_stopping_patience)] if validate else [])
    trainer = ReplyLogitsTrainer(
        model=model,
        args=args,
        train_dataset=[t.as_features() for t in stream],
        eval_dataset=[t.as_features() for t in val] if val else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=callbacks,
        max_batch_tokens=max_batch_tokens,
        checkpoint_every_step=lora.gradient_checkpointing,
    )
    trainer.remove_callback(PrinterCallback)  # our callback reports progress; raw log dicts would flood stdout
    release_freed_memory()
    reset_peak_rss()  # the peak recorded is this run's, not what the process held before (index, other runs)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with tensors_returned_on_free(lora.mmap_threshold_kib * 1024):
        result = trainer.train()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if validate:
            val_loss = trainer.state.best_metric  # the best checkpoint was loaded back
        else:
            val_loss = float(trainer.evaluate()["eval_loss"]) if val and not callback.cancelled else None
    release_freed_memory()
    model.eval()
    last = callback.losses[-10:]
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    history = trainer.state.log_history
    curve = {
        "train": [[h["step"], round(h["loss"], 4)] for h in history if "loss" in h],
        "validation": [[h["step"], round(h["eval_loss"], 4)] for h in history if "eval_loss" in h],
    }
    return {
        "cancelled": callback.cancelled,
        "figures": {
            "loss_curve": curve,
            "steps": trainer.state.global_step,
            "max_steps": steps,
            "stopped_early": trainer.state.global_step < steps,
            "train_loss_mean": float(result.training_loss),
            "train_loss_final": sum(last) / len(last) if last else None,
            "val_loss": val_loss,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "tokens_processed": tokens,
            "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "peak_rss_mib": round(rss_mib("VmHWM"), 1),
        },
        "memory": {
            "max_batch_tokens": max_batch_tokens,
            "device_free_bytes": free,
            "processes": state.num_processes if state else 1,
            "precision": precision or "float32",
            "gradient_checkpointing": lora.gradient_checkpointing,
            "rss_mib_per_step": callback.rss_mib,
        },  # fmt: skip
    }


def describe(result: TrainResult) -> str:
    """One line for the CLI: what was trained (or reused) and what it cost."""
    m = result.manifest
    verb = "reused" if result.reused else "trained"
    label = (f"{result.kind}/{result.group}" if result.group else result.kind) + (
        f"@seed{result.replicate}" if result.replicate else ""
    )
    epochs = ", ".join(f"{f} {v['epochs_reached']:.1f}" for f, v in (m.training or {}).get("families", {}).items())
    flag = " UNDERTRAINED" if (m.training or {}).get("undertrained") else ""
    val = f", val loss {m.val_loss:.3f}" if m.val_loss is not None else ""
    loss = f"{m.train_loss_final:.3f}" if m.train_loss_final is not None else "-"
    return (
        f"{verb} {label}: {m.tokens_processed or 0:,} tokens in {m.wall_s or 0:.0f} s (epochs: {epochs}){flag} "
        f"({m.tokens_per_s} tok/s, peak RSS {(m.peak_rss_mib or 0) / 1024:.1f} GiB), train loss {loss}{val}, "
        f"{m.trainable_params:,} trainable params, {m.size_bytes / 1e6:.1f} MB -> {result.folder}"
    )
