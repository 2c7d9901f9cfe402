"""The CTranslate2 engine: the generator and each LoRA adapter converted once, answering like `Generator`.

CTranslate2 has no runtime LoRA, so each adapter is merged into a float32 copy of the base weights
(`peft` `merge_and_unload`) and converted on its own, cached under the artifact folder by a hash of the
adapter's files (its manifest and fingerprint included). Every conversion is checked before it is used:
greedy answers on a fixed sample of prompts are compared with transformers float32 (the agreement rate
goes into the converted model's manifest), and an adapter whose conversion gives exactly the converted
base model's logits is an error, never a silent base model.

Usage (the runtime, for an arm with `adapter_folder` or None for the base weights):
    >>> if engine_ct2.selected(settings.models) == "ctranslate2":          # doctest: +SKIP
    ...     gen = engine_ct2.generator(settings, base_generator, adapter_folder)
    ...     gen.generate(prompts)

Answers are greedy. int8 answers differ from float32 ones and, as in any batched engine, depend on the
prompts that share a batch (CTranslate2 forwards a batch's prompts at once only up to the shortest one).
Batches are therefore a function of one call's prompts alone (`generation.plan_batches`): an eval batch,
fixed by row order, gets the same answers in every rerun. float32 answers matched one-at-a-time answers.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ragft.service import adapters, models
from ragft.service.generation import Generation, Generator, Messages, machine_shares, plan_batches
from ragft.service.settings import ModelSettings, Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# The fixed sample every conversion is checked on: short questions of the kinds the arms answer.
SAMPLE_PROMPTS: list[Messages] = [
    [{"role": "user", "content": q}]
    for q in (
        "What is the price of the product?",
        "How many hours does the battery last?",
        "When was the firmware version released?",
        "Does the warranty cover the dock? Answer yes or no.",
        "What does the router weigh in grams?",
        "Reply with JSON: what is the product category?",
        "What is the capital of France?",
        "Summarise in one sentence what a router does.",
    )
]
SAMPLE_NEW_TOKENS = 24  # enough for answers to part ways; 8 prompts x 24 tokens is ~5 s in transformers on 2 cores
PROBE_TEXT = "The answer to the question is"  # as in `adapters.probe_logits`


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here; the message says what to install or set."""


def installed() -> bool:
    """Whether the ctranslate2 wheel imports on this machine."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def selected(models_settings: ModelSettings) -> str:
    """The engine that will answer: the configured one, or transformers (with a warning) when ctranslate2 is
    configured but not installed, so a platform without a wheel still runs."""
    if models_settings.engine == "ctranslate2" and not installed():
        log.warning(
            "models.engine='ctranslate2' but the ctranslate2 package is not installed: answering with "
            "transformers. Install it with: pip install ctranslate2==4.8.5"
        )
        return "transformers"
    return models_settings.engine


class CT2Generator(Generator):
    """A converted model behind the `Generator` interface: the same tokenizer, chat template, left truncation,
    batching and `Generation` records; `model` is a `ctranslate2.Generator`."""

    def __init__(self, model, tokenizer, model_id: str, settings, compute_type: str, folder: Path, replicas: int = 1):
        super().__init__(model, tokenizer, model_id, settings)
        self.compute_type = compute_type
        self.folder = folder
        self.replicas = replicas  # batches the model runs at once (ctranslate2 inter_threads)
        self.engine = f"ctranslate2-{compute_type}"

    @property
    def conversion(self) -> dict:
        """The converted model's manifest (source, adapter, compute type, agreement with transformers float32),
        for a run's results."""
        return json.loads((self.folder / MANIFEST).read_text())

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids cut from the left at `max_prompt_tokens`, exactly as the transformers path cuts them."""
        return self.tokenize(
            texts, truncation=True, max_length=self.settings.max_prompt_tokens, add_special_tokens=False
        )["input_ids"]

    def _options(self, max_new_tokens: int | None, static: tuple[int, ...] = ()) -> dict:
        options = {
            "max_length": max_new_tokens or self.settings.max_new_tokens,
            "sampling_topk": 1,  # greedy
            "end_token": self.tokenizer.eos_token,
        }
        if static:
            options["static_prompt"] = self.tokenizer.convert_ids_to_tokens(list(static))
        return options

    def static_prefix(self, messages: Messages, ids: list[int]) -> tuple[int, ...]:
        """The token ids of the turns before the question when they hold worked examples (the fewshot arm's
        system message and examples, the same for every question of a pool), or () when there are none or they
        are not a token prefix of the prompt (a cut prompt). CTranslate2 computes a static prompt's state once
        and caches it: fewshot prompts answered 1.29x faster in batches of 8, every answer identical."""
        if len(messages) < 3:
            return ()
        text = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False)
        prefix = self.tokenize(text, add_special_tokens=False)["input_ids"]
        return tuple(prefix) if len(prefix) < len(ids) and ids[: len(prefix)] == prefix else ()

    def generate(self, prompts: list[Messages], max_new_tokens: int | None = None) -> list[Generation]:
        """One greedy answer per prompt, in the order given."""
        ids = self._encode([self.render(p) for p in prompts])
        statics = [self.static_prefix(p, x) for p, x in zip(prompts, ids, strict=True)]
        results: list[Generation | None] = [None] * len(prompts)
        # CTranslate2 forwards a batch's prompts at once only up to the shortest one and feeds the rest one token
        # per step, so prompts of mixed lengths cost extra decoding steps: 8 rag prompts of 382-784 tokens ran
        # 3x slower in one batch than one at a time. A spread of at most max_new_tokens keeps the extra steps
        # below the answer's own. A batch shares one static prompt, so prompts with different ones part.
        spread = max_new_tokens or self.settings.max_new_tokens
        batches = by_static_prompt(plan_batches([len(x) for x in ids], self.settings, max_spread=spread), statics)

        def run(batch: list[int]) -> tuple[list, float]:
            static = statics[batch[0]]
            tokens = [self.tokenizer.convert_ids_to_tokens(ids[i][len(static) :]) for i in batch]
            t0 = time.perf_counter()
            out = self.model.generate_batch(
                tokens, include_prompt_in_result=False, beam_size=1, **self._options(max_new_tokens, static)
            )
            return out, (time.perf_counter() - t0) * 1000

        # Batches run side by side on the model's replicas (one thread each), leaving one replica to other callers
        # (a live query beside an eval run); each batch is the same whichever replica runs it.
        window = min(len(batches), max(1, self.replicas - 1))
        t0 = time.perf_counter()
        if window > 1:
            with ThreadPoolExecutor(max_workers=window, thread_name_prefix="ragft-ct2") as pool:
                done = list(pool.map(run, batches))
        else:
            done = [run(b) for b in batches]
        # side-by-side batches each took longer than their share of the machine: cost is the call's wall clock
        shares = machine_shares((time.perf_counter() - t0) * 1000, [latency for _, latency in done])
        for batch, (out, latency_ms), machine_ms in zip(batches, done, shares, strict=True):
            for result, i in zip(out, batch, strict=True):
                answer = result.sequences_ids[0]
                results[i] = Generation(
                    text=self.tokenizer.decode(answer, skip_special_tokens=True).strip(),
                    prompt_tokens=len(ids[i]),
                    generated_tokens=len(answer),
                    latency_ms=latency_ms,
                    batch_size=len(batch),
                    machine_ms=machine_ms,
                )
        return results

    def stream(self, messages: Messages, max_new_tokens: int | None = None, on_done=None, stop=None):
        """Yield the answer's text piece by piece as tokens come (`generate_tokens`); `on_done(Generation)` gets
        the token counts. The pieces join to the answer `generate` gives for the same prompt alone. Setting `stop`
        (a threading.Event) ends generation at the next token: the reader went away."""
        [ids] = self._encode([self.render(messages)])
        static = self.static_prefix(messages, ids)
        t0 = time.perf_counter()
        answer: list[int] = []
        sent = ""
        steps = self.model.generate_tokens(
            self.tokenizer.convert_ids_to_tokens(ids[len(static) :]),
            callback=lambda _step: stop is not None and stop.is_set(),
            **self._options(max_new_tokens, static),
        )
        try:
            for step in steps:
                answer.append(step.token_id)
                text = self.tokenizer.decode(answer, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # a character split across byte-level tokens: wait for the rest of it
                piece, sent = text[len(sent) :], text
                if piece:
                    yield piece
        finally:
            steps.close()  # a reader that stops iterating also stops the decoding thread
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        if text != sent:  # an answer cut inside a character ends as generate's does, with the replacement mark
            yield text[len(sent) :]
            sent = text
        if on_done is not None:
            on_done(Generation(sent.strip(), len(ids), len(answer), (time.perf_counter() - t0) * 1000, 1))

    def probe_logits(self) -> np.ndarray:
        """Logits on the fixed probe text, to prove a converted adapter still changes the model."""
        import ctranslate2

        ids = self.tokenize(PROBE_TEXT)["input_ids"]
        logits = self.model.forward_batch([self.tokenizer.convert_ids_to_tokens(ids)])
        if logits.device != "cpu":
            logits = logits.to_device(ctranslate2.Device.cpu)
        return np.array(logits, dtype=np.float32)


def by_static_prompt(batches: list[list[int]], statics: list[tuple[int, ...]]) -> list[list[int]]:
    """Each planned batch split into the prompts sharing one static prompt, in first-seen order."""
    return [[i for i in b if statics[i] == static] for b in batches for static in dict.fromkeys(statics[i] for i in b)]


_MODELS: dict[tuple, object] = {}  # loaded ctranslate2.Generator objects, shared by every CT2Generator
_MODELS_LOCK = threading.Lock()


def generator(settings: Settings, base: Generator, adapter_folder: Path | None = None) -> CT2Generator:
    """The converted base model (`adapter_folder` None) or the converted merge of one LoRA adapter, converting
    and checking it on first use; each converted model is loaded once per process (per device, compute type and
    threads) and answers with `settings.generation`.

    `base` is the transformers generator of the configured base model: its tokenizer and model id are shared, and
    adapters must already have passed `adapters.check_base_model`."""
    if not installed():
        raise EngineUnavailable(
            "models.engine='ctranslate2' needs the ctranslate2 package: pip install ctranslate2==4.8.5, or set "
            "RAGFT_MODELS__ENGINE=transformers. `engine_ct2.selected()` falls back to transformers by itself."
        )
    folder = convert(settings, base, adapter_folder)
    return _wrap(folder, base, settings)


def _wrap(folder: Path, base: Generator, settings: Settings, cache: bool = True) -> CT2Generator:
    """A CT2Generator answering with `settings.generation` on the model in `folder`, loaded once if `cache`."""
    m = settings.models
    n = replicas(m)
    key = (str(folder), m.device, m.compute_type, m.ct2_intra_threads, n)
    with _MODELS_LOCK:
        model = _MODELS.get(key) or _load_model(folder, m, n)
        if cache:
            for other in [k for k in _MODELS if k[0] != key[0] and same_artifact(Path(k[0]), folder)]:
                del _MODELS[other]  # superseded (a retrain): freed once the calls still using it end
            _MODELS[key] = model
    return CT2Generator(model, base.tokenizer, base.model_id, settings.generation, m.compute_type, folder, n)


def loaded_artifacts() -> set[tuple]:
    """The loaded conversions of trained artifacts (adapters merged, scratch models), not of the base model."""
    with _MODELS_LOCK:
        return {key for key in _MODELS if (_identity(Path(key[0])) or (None,))[0] is not None}


def release(keys) -> int:
    """Unload these converted models (keys of `loaded_artifacts`); returns how many were loaded. The process-wide
    cache keeps a model until its artifact is retrained, and every point of a curve trains other artifacts, so a
    curve of 7 points held 7 models to its end (peak 10.4 GiB). Calls still using a released model finish with it;
    a later call loads it again."""
    with _MODELS_LOCK:
        gone = [key for key in keys if key in _MODELS]
        for key in gone:
            del _MODELS[key]
    return len(gone)


def replicas(m: ModelSettings) -> int:
    """Batches a converted model runs at once: `models.inter_threads`, or on CPU one per core plus one (a call
    uses one per core, the extra one is for a live query); one CUDA stream on a GPU."""
    if m.inter_threads:
        return m.inter_threads
    return len(os.sched_getaffinity(0)) + 1 if _device(m)[0] == "cpu" else 1


def _load_model(folder: Path, m: ModelSettings, replicas: int):
    import ctranslate2

    device, index = _device(m)
    return ctranslate2.Generator(
        str(folder), device=device, device_index=index, compute_type=m.compute_type,
        intra_threads=m.ct2_intra_threads if device == "cpu" else 0, inter_threads=replicas,
    )  # fmt: skip


def _device(m: ModelSettings) -> tuple[str, int]:
    """CTranslate2's (device, index) for `models.device`: 'cpu', or 'cuda'/'cuda:N'."""
    if m.device == "cpu":
        return "cpu", 0
    if m.device.startswith("cuda"):
        return "cuda", int(m.device.partition(":")[2] or 0)
    raise EngineUnavailable(
        f"CTranslate2 runs on 'cpu' or 'cuda', not models.device='{m.device}'. Set RAGFT_MODELS__ENGINE=transformers."
    )


def same_artifact(a: Path, b: Path) -> bool:
    """Whether two conversion folders convert the same artifact folder (or the base model) in the same compute
    type, as their manifests say: a newer one supersedes the older."""
    if a.parent != b.parent or a.name.rsplit("-", 1)[0] != b.name.rsplit("-", 1)[0]:
        return False
    return _identity(a) is not None and _identity(a) == _identity(b)


def _identity(folder: Path) -> tuple | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("adapter"), manifest.get("compute_type")


def evict_conversions(target: Path, keep: int) -> list[Path]:
    """Delete the conversions `target` supersedes past the newest `keep` (target counted, newest first by
    modification time); returns the deleted folders. Temp folders and other artifacts' conversions stay."""
    siblings = [p for p in target.parent.glob(f"{target.name.rsplit('-', 1)[0]}-*") if p.is_dir()
                and same_artifact(p, target) and (p / MANIFEST).is_file()]  # fmt: skip
    older = sorted((p for p in siblings if p != target), key=lambda p: p.stat().st_mtime, reverse=True)
    evicted = older[max(0, keep - 1) :]
    for path in evicted:
        shutil.rmtree(path, ignore_errors=True)
        log.info("evicted the superseded CTranslate2 conversion %s", path.name)
    return evicted


def _files_hash(folder: Path) -> str:
    """Content hash of an adapter folder (weights, config and manifest with its training fingerprint)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def converted_folder(settings: Settings, source: str, adapter_folder: Path | None) -> Path:
    """Where the conversion of the base model (or of one adapter merged into it) lives."""
    version = importlib.metadata.version("ctranslate2")
    what = _files_hash(adapter_folder) if adapter_folder is not None else "base"
    key = hashlib.sha256(f"{source}|{what}|{version}".encode()).hexdigest()[:12]
    name = "base" if adapter_folder is None else f"{Path(adapter_folder).parent.name}-{Path(adapter_folder).name}"
    return settings.artifact_dir / "ct2" / f"{name}-{settings.models.compute_type}-{key}"


def is_lora(folder: Path | None) -> bool:
    """Whether `folder` holds a LoRA adapter (merged before conversion) rather than a whole model (scratch)."""
    return folder is not None and (Path(folder) / "adapter_config.json").is_file()


def convert(settings: Settings, base: Generator, adapter_folder: Path | None = None) -> Path:
    """Convert the base model, or merge one LoRA adapter into a float32 copy of it and convert that, or convert a
    whole model trained with the base tokenizer (the scratch arm's), unless a checked conversion is stored; written
    to a temp folder first, so a crash or a failed check leaves nothing behind."""
    source = models.servable_folder(settings.models, settings.artifact_dir)  # the float32 HF folder
    target = converted_folder(settings, source, adapter_folder)
    if (target / MANIFEST).is_file():
        return target
    base_target = convert(settings, base, None) if is_lora(adapter_folder) else None
    with models.LOADING:
        if (target / MANIFEST).is_file():
            return target
        _convert(settings, base, source, adapter_folder, target, base_target)
    return target


def _convert(
    settings: Settings,
    base: Generator,
    source: str,
    adapter_folder: Path | None,
    target: Path,
    base_target: Path | None,
) -> None:
    import ctranslate2
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoModelForCausalLM

    m = settings.models
    t0 = time.perf_counter()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        whole = adapter_folder is not None and not is_lora(adapter_folder)
        hf = AutoModelForCausalLM.from_pretrained(adapter_folder if whole else source, dtype=torch.float32).eval()
        if is_lora(adapter_folder):
            from peft import PeftModel

            hf = PeftModel.from_pretrained(hf, str(adapter_folder)).eval()
            _check_changes_model(hf, base.tokenizer, adapter_folder)
        reference = Generator(hf, base.tokenizer, base.model_id, _sample_settings(settings))
        expected = [g.text for g in reference.generate(SAMPLE_PROMPTS)]  # transformers float32, with the adapter
        if is_lora(adapter_folder):
            hf = hf.merge_and_unload()
        hf.save_pretrained(tmp / "hf")
        base.tokenizer.save_pretrained(tmp / "hf")
        # The converter calls gc.collect() after every layer; in a process holding models and a web app each call
        # walked millions of objects (6.4 of a 14 s conversion). Frozen objects are skipped by those collections.
        gc.freeze()
        try:
            TransformersConverter(str(tmp / "hf")).convert(str(tmp / "model"), quantization=m.compute_type, force=True)
        finally:
            gc.unfreeze()
        shutil.rmtree(tmp / "hf")
        settings_ = settings.model_copy(update={"generation": _sample_settings(settings)})
        converted = _wrap(tmp / "model", base, settings_, cache=False)  # the folder moves
        answers = [g.text for g in converted.generate(SAMPLE_PROMPTS)]
        agree = sum(a == b for a, b in zip(answers, expected, strict=True))
        if base_target is not None:
            _check_not_erased(converted, _wrap(base_target, base, settings_), adapter_folder, m)
        manifest = {
            "source": source,
            "base_model": base.model_id,
            "adapter": str(adapter_folder) if adapter_folder is not None else None,
            "adapter_manifest": _adapter_manifest(adapter_folder),
            "compute_type": m.compute_type,
            "ctranslate2": ctranslate2.__version__,
            "agreement": {
                "reference": "transformers float32" + (" with the adapter" if is_lora(adapter_folder) else ""),
                "prompts": len(SAMPLE_PROMPTS),
                "max_new_tokens": SAMPLE_NEW_TOKENS,
                "identical_answers": agree,
                "rate": agree / len(SAMPLE_PROMPTS),
            },
            "convert_s": round(time.perf_counter() - t0, 2),
        }
        (tmp / "model" / MANIFEST).write_text(json.dumps(manifest, indent=2))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        (tmp / "model").rename(target)
        evict_conversions(target, m.ct2_keep_conversions)
        log.info("converted %s to CTranslate2 %s in %.1f s: %d/%d sample answers identical to transformers float32",
                 adapter_folder or source, m.compute_type, manifest["convert_s"], agree, len(SAMPLE_PROMPTS))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sample_settings(settings: Settings):
    """The decoding of the conversion check: the configured limits, with a fixed answer length."""
    return settings.generation.model_copy(update={"max_new_tokens": SAMPLE_NEW_TOKENS})


def _adapter_manifest(folder: Path | None) -> dict | None:
    """The fields of the adapter's training manifest that identify it, when it has one."""
    path = None if folder is None else Path(folder) / adapters.MANIFEST
    if path is None or not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return {k: stored.get(k) for k in ("kind", "corpus", "fingerprint", "base_model_hash", "created_at")}


def _check_changes_model(peft_model, tokenizer, adapter_folder: Path) -> None:
    """Refuse an adapter that does not change the model even in float32 (as `adapters.attach_lora` does)."""
    import torch

    with_adapter = adapters.probe_logits(peft_model, tokenizer)
    with peft_model.disable_adapter():
        without = adapters.probe_logits(peft_model, tokenizer)
    if torch.equal(with_adapter, without):
        raise adapters.AdapterMismatch(
            f"the adapter at {adapter_folder} loaded but does not change the model's output (all-zero LoRA B "
            "matrices or target modules that do not exist in this model). Train it again."
        )


def _check_not_erased(converted: CT2Generator, base: CT2Generator, adapter_folder: Path, m: ModelSettings) -> None:
    """Refuse a converted adapter that gives exactly the converted base model's logits: quantisation erased it."""
    if np.array_equal(converted.probe_logits(), base.probe_logits()):
        raise adapters.AdapterMismatch(
            f"the adapter at {adapter_folder} changes the model in float32, but merged and converted to CTranslate2 "
            f"{m.compute_type} it gives exactly the base model's logits: the conversion erased the fine-tune. Use "
            "RAGFT_MODELS__COMPUTE_TYPE=float32 (or RAGFT_MODELS__ENGINE=transformers), or train an adapter that "
            "moves the weights more (higher lora.rank or lora.learning_rate, more epochs)."
        )
