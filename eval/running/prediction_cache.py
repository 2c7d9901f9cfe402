"""The answer cache: every generated answer is kept under the key of what produced it, so any run asking the same
prompt of the same weights with the same decoding reuses it, as lm-evaluation-harness's `--use_cache` and
promptfoo's cache do.

The key hashes the weights that answer (the base weights' content hash, or the trained artifact's manifest
fingerprint and creation time), the chat prompt exactly as sent (passages and worked examples included), the
answer length, the settings that decide decoding (`answering_settings`: model, dtype, engine and compute type,
prompt limits) and the engine that runs. Editing one task row changes that row's prompts only, so a run after the
edit answers that row again and reuses every other answer; a curve's reference arms, the demo and a later full
`ragft eval` share the answers they have in common. `ragft eval --fresh` reads nothing from it.

What the key leaves out, on purpose: the other prompts of the batch. A batched engine's answer can depend on the
prompts beside it (padding; CTranslate2 forwards a batch only up to its shortest prompt), so a reused answer is the
one its prompt got in the batch it was first answered in. A run never reads back an answer it made itself, so a
run that finds nothing cached (a cold one) forms the batches it formed before the cache existed, and gives the same
answers. Entries are never evicted: an answer takes a few hundred bytes in the results database.

The cache sits where prompts become answers: `CachingRuntime` hands `ragft.service.arms.answer` a generator that looks
each prompt up and sends only the rest to the arm's real generator.

Example:
    >>> # cache = AnswerCache(store, settings, runtime.engine)
    >>> # answers = answer(ARMS["rag"], CachingRuntime(runtime, cache), queries, max_new_tokens=32)
    >>> # cache.last_reused  -> [True, True, False, True]: one answer generated, three reused
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

from ragft.eval.store import CachedAnswer, Store
from ragft.service import adapters
from ragft.service.arms import Arm
from ragft.service.generation import Generation, Messages
from ragft.service.kinds import KINDS
from ragft.service.runtime import Runtime
from ragft.service.settings import Settings


def answering_settings(settings: Settings) -> dict:
    """The settings that decide what an answer is, given its prompt and weights: the model and how it runs (how
    long idle threads spin, `models.omp_spin_count`, changes the speed only; the API key is a secret) and decoding
    (how prompts are grouped into batches, `batch_size` and `max_batch_tokens`, is left out as the run id leaves it
    out)."""
    return {
        "models": settings.models.model_dump(mode="json", exclude={"backend_api_key", "omp_spin_count"}),
        "generation": settings.generation.model_dump(exclude={"batch_size", "max_batch_tokens"}),
    }


def weights_identity(runtime: Runtime, arm: Arm, group: str) -> tuple[str, str | None] | None:
    """What names the weights `arm` answers `group`'s rows with, and the artifact fingerprint answers carry: the
    base weights' content hash (the served model's name for a remote backend), or the trained artifact's
    fingerprint and creation time (a forced retrain keeps the fingerprint, not the weights); None when the
    artifact is missing (the real generator says how to train it)."""
    if arm.adapter is None:
        if not runtime.runs_locally(arm):
            return f"remote:{runtime.settings.models.backend_model}", None
        return f"base:{runtime.weights_hash()}", None
    manifest = adapters.stored_manifest(runtime.artifact_folder(KINDS[arm.adapter], group))
    if manifest is None:
        return None
    return f"{arm.adapter}:{manifest.fingerprint}:{manifest.created_at}", manifest.fingerprint


def answer_key(context: str, weights: str, prompt: Messages, max_new_tokens: int | None) -> str:
    """The cache key of one answer: a hash of the settings context, the weights, the prompt and its answer length."""
    text = json.dumps([context, weights, prompt, max_new_tokens], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class AnswerCache:
    """The cache as one run uses it: read (unless `read` is False: `--fresh`) and written through `store`, with
    the settings context of `settings` and `engine`. `last_reused` says, per prompt of the generate() calls since
    the caller cleared it, whether its answer came from the cache."""

    def __init__(self, store: Store, settings: Settings, engine: str, read: bool = True):
        self.store = store
        self.read = read
        self.context = json.dumps(answering_settings(settings) | {"engine": engine}, sort_keys=True, default=str)
        self.written: set[str] = set()  # keys this run generated: never read back within it (see `generate`)
        self.last_reused: list[bool] = []

    def generate(self, runtime: Runtime, arm: Arm, group: str, prompts: list[Messages],
                 max_new_tokens: int | None) -> tuple[list[Generation], str | None]:  # fmt: skip
        """`arm`'s answers to `prompts` for `group`'s rows, from the cache where it holds them and from the arm's
        generator for the rest (kept in the cache), with the artifact fingerprint that answered. Only answers made
        before this run are read: two rows of one run with the same prompt (a fewshot arm without examples of a
        format asks what base asks) are each answered in their own batch, as they were before the cache, so a run
        that finds nothing cached forms the batches, and gives the answers, it always did."""
        identity = weights_identity(runtime, arm, group)
        weights, fingerprint = identity if identity else (None, None)
        keys = [answer_key(self.context, weights, p, max_new_tokens) for p in prompts] if weights else None
        readable = [k for k in keys or () if k not in self.written]
        found = self.store.cached_answers(readable) if readable and self.read else {}
        out: list[Generation | None] = [None] * len(prompts)
        todo = []
        for i in range(len(prompts)):
            a = found.get(keys[i]) if keys else None
            if a is None:
                todo.append(i)
            else:
                out[i] = Generation(a.text, a.prompt_tokens, a.generated_tokens, a.latency_ms, a.batch_size,
                                    a.machine_ms)  # fmt: skip
        if todo:
            with runtime.generator_for(arm, group) as generator:
                made = generator.generate([prompts[i] for i in todo], max_new_tokens)
                answered_with = generator.fingerprint
            for i, g in zip(todo, made, strict=True):
                out[i] = g
            if keys and answered_with == fingerprint:  # an artifact retrained meanwhile: its answers stay uncached
                self.store.cache_answers([
                    (keys[i], weights, CachedAnswer(g.text, g.prompt_tokens, g.generated_tokens, g.latency_ms,
                                                    g.batch_size, g.machine_ms))
                    for i, g in zip(todo, made, strict=True)
                ])  # fmt: skip
                self.written.update(keys[i] for i in todo)
            fingerprint = answered_with
        generated = set(todo)
        self.last_reused += [i not in generated for i in range(len(prompts))]
        return out, fingerprint


class CachingRuntime:
    """`runtime` with its generators answering through `cache`; everything else (settings, the retriever, the
    worked examples: how prompts are built) is the runtime's own."""

    def __init__(self, runtime: Runtime, cache: AnswerCache):
        self.runtime = runtime
        self.cache = cache

    def __getattr__(self, name: str):
        return getattr(self.runtime, name)

    @contextmanager
    def generator_for(self, arm: Arm, group: str = "questions") -> Iterator[_CachedGenerator]:
        yield _CachedGenerator(self, arm, group)


class _CachedGenerator:
    """The generator `ragft.service.arms.answer` sees: the arm's own, for the prompts the cache does not hold."""

    def __init__(self, owner: CachingRuntime, arm: Arm, group: str):
        self.owner, self.arm, self.group = owner, arm, group
        self.fingerprint: str | None = None

    def generate(self, prompts: list[Messages], max_new_tokens: int | None = None) -> list[Generation]:
        out, self.fingerprint = self.owner.cache.generate(self.owner.runtime, self.arm, self.group, prompts,
                                                          max_new_tokens)  # fmt: skip
        return out
