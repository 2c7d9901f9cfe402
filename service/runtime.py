"""Everything an arm needs for one corpus, loaded on first use and shared by all arms.

Models are loaded lazily so `ragft query --arms base` never loads the embedder and the
API starts at once. With transformers one lock serialises in-process generation: the arms share one set of
weights whose active adapter is switched per arm. With CTranslate2 every arm has its own converted model, so
the lock covers finding (and on first use converting) it, not generating: a live query then runs beside a
background eval batch, the two sharing the cores (`models.inter_threads`), instead of waiting for it. With an
OpenAI-compatible backend (`models.generator_backend='openai'`) arms generate there, unlocked, and only
training and the small scratch model stay in this process.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragft.service import adapters, engine_ct2, models
from ragft.service.adapters import ArtifactMissing
from ragft.service.arms import Arm
from ragft.service.backend import Backend, BackendError, RemoteGenerator, module_name, versioned_folder
from ragft.service.documents import scan_documents
from ragft.service.generation import Generator
from ragft.service.kinds import KINDS, Kind
from ragft.service.prompts import Example
from ragft.service.retrieval import IndexReport, Retriever, build_index, index_exists, index_lock
from ragft.service.settings import Settings


class Runtime:
    def __init__(self, settings: Settings, corpus: Path, examples: dict[str, list[Example]] | None = None):
        """`examples`: the fewshot pools drawn from the corpus's train split; None when it has no tasks/."""
        self.settings = settings
        self.corpus = Path(corpus)
        self._examples = examples
        self._generator: Generator | None = None
        self._full_models: dict[str, Generator] = {}
        self._loaded: dict[str, adapters.AdapterManifest] = {}  # label -> manifest of the artifact loaded under it
        self._modules: dict[str, tuple] = {}  # backend module -> (fingerprint, created_at) the server was seen to hold
        self._module_lock = threading.Lock()
        self._embedder = None
        self._backend: Backend | None = None
        self._retriever: Retriever | None = None
        self._weights_hash: str | None = None
        self._index_dir: Path | None = None
        self.warm_up_error: str | None = None
        self.replicate = 0  # which training seed's artifacts answer (eval.training_seeds)
        self.lock = threading.RLock()

    @property
    def index_dir(self) -> Path:
        return self._index_dir or self.settings.index_dir(self.corpus)

    @property
    def engine(self) -> str:
        """The in-process engine that answers: models.engine, or transformers where CTranslate2 is missing."""
        return engine_ct2.selected(self.settings.models)

    @property
    def index_ready(self) -> bool:
        """Whether this corpus has a complete index on disk (retrieving arms can answer)."""
        return index_exists(self.index_dir)

    def with_index(self, folder: Path) -> Runtime:
        """The same loaded models and adapters searching another index (the corpus after an update)."""
        other = copy.copy(self)
        other._index_dir = Path(folder)
        other._retriever = None
        return other

    def generator(self) -> Generator:
        with self.lock:
            if self._generator is None:
                model, tokenizer, model_id = models.load_generator(self.settings.models, self.settings.artifact_dir)
                self._generator = Generator(model, tokenizer, model_id, self.settings.generation)
            return self._generator

    @property
    def remote(self) -> bool:
        return self.settings.models.generator_backend == "openai"

    def backend(self) -> Backend:
        if self._backend is None:
            # reached outside the lock: a backend that is down (timeouts, retries) must not hold up the
            # in-process scratch arm or the retriever
            backend = Backend(self.settings.models, self.settings.generation)
            backend.served()  # fails now, with the fix, if the server is not there
            with self.lock:
                self._backend = self._backend or backend
        return self._backend

    def load_generation(self) -> None:
        """Make ready what the arms generate with: the local model, or the backend connection."""
        if self.remote:
            self.backend()
        else:
            self.generator()

    @property
    def generator_loaded(self) -> bool:
        """Whether arms can generate now: the local model is loaded, or the backend answered."""
        return (self._backend if self.remote else self._generator) is not None

    def weights_hash(self) -> str:
        """Hash of the base weights, taken before any adapter wraps them (once per process, ~1 s)."""
        with self.lock:
            if self._weights_hash is None:
                self._weights_hash = models.weights_hash(self.generator().model)
            return self._weights_hash

    def embedder(self):
        if self._embedder is not None:  # loaded: no lock, so an index build never waits for a generation
            return self._embedder
        with self.lock:
            if self._embedder is None:
                self._embedder = models.load_embedder(self.settings.models)
            return self._embedder

    def retriever(self) -> Retriever:
        with self.lock:
            if self._retriever is None:
                self._retriever = Retriever(
                    self.index_dir, self.embedder(), self.settings.models.embedder, self.settings.retrieval
                )
            return self._retriever

    def index(self) -> IndexReport:
        """Build or update this corpus's index, then make the next search use it.

        Builds take turns under the index lock only (`retrieval.index_lock`), not the model lock: generation goes
        on while a changed document is embedded, and searches already running keep the index they loaded."""
        embedder = self.embedder()
        with index_lock(self.index_dir):
            scan = scan_documents(self.corpus)  # read inside the lock: the corpus as this build indexes it
            report = build_index(
                scan.documents, embedder, self.settings.models.embedder, self.settings.retrieval, self.index_dir,
                source=self.corpus, keep=frozenset(u.file for u in scan.unreadable),
            )  # fmt: skip
        report.unreadable = scan.unreadable
        self._retriever = None  # no model lock: a search loading the index holds it while waiting for the index lock
        return report

    def examples(self, pool: str) -> list[Example]:
        """The fewshot arm's worked examples for `pool`; an error when the corpus has no tasks/ to draw from."""
        if self._examples is None:
            raise ArtifactMissing(
                f"the fewshot arm needs worked examples from the train split, and corpus '{self.corpus}' has no "
                'tasks/ folder. Add tasks/*.jsonl with rows marked "split": "train" (see corpora/README.md).'
            )
        return self._examples.get(pool, [])

    def runs_locally(self, arm: Arm) -> bool:
        """Whether `arm` generates in this process (and so takes turns for the shared weights)."""
        return not self.remote or (arm.adapter is not None and not KINDS[arm.adapter].remote_servable)

    def can_answer(self, arm: Arm) -> bool:
        """Whether `arm`'s index and trained artifact exist, so a call to it will not fail for want of either."""
        if arm.retrieve and not self.index_ready:
            return False
        return arm.adapter is None or adapters.stored_manifest(self.artifact_folder(KINDS[arm.adapter])) is not None

    def artifact_group(self, kind: Kind, group: str) -> str | None:
        """The adapter group whose artifact answers `group`'s rows: itself under lora.scope=per_family for kinds
        trained per group, else None (one artifact for every row)."""
        return group if kind.scoped and self.settings.lora.scope == "per_family" else None

    def artifact_folder(self, kind: Kind, group: str = "questions") -> Path:
        """Where the artifact that answers `group`'s rows with `kind` lives (this runtime's training seed)."""
        return adapters.artifact_dir(self.settings, self.corpus, kind, self.artifact_group(kind, group), self.replicate)

    def for_replicate(self, replicate: int) -> Runtime:
        """The same loaded models answering with the artifacts of training seed + `replicate`."""
        other = copy.copy(self)
        other.replicate = replicate
        other._full_models = {}
        return other

    def _checked_manifest(self, arm: Arm, folder: Path, weights_hash: str | None) -> adapters.AdapterManifest:
        """The stored manifest; refuses a missing artifact or one trained on other base weights, with the fix."""
        manifest = adapters.read_manifest(folder, arm.name, self.corpus)
        adapters.check_base_model(manifest, models.resolve_generator(self.settings.models).model_id, folder,
                                  weights_hash)  # fmt: skip
        return manifest

    def _label(self, kind: Kind, group: str = "questions") -> str:
        """The name an artifact is loaded under: its kind, adapter group and training seed ('lora-questions')."""
        scope = self.artifact_group(kind, group)
        return "-".join(
            [kind.name, *([scope] if scope else []), *([f"seed{self.replicate}"] if self.replicate else [])]
        )

    def _stale(self, label: str, manifest: adapters.AdapterManifest) -> bool:
        """Whether what is loaded under `label` was trained before the stored `manifest` (a retrain swapped it):
        the manifest is read on every batch anyway, so a retrain is picked up by the next one."""
        loaded = self._loaded.get(label)
        if loaded is None:
            return False
        # created_at too: a forced retrain of the same recipe keeps its fingerprint, not necessarily its weights
        return (loaded.fingerprint, loaded.created_at) != (manifest.fingerprint, manifest.created_at)

    def loaded_fingerprints(self) -> dict[str, str]:
        """The manifest fingerprint of each trained artifact this runtime answered with, by label ('lora-questions',
        'scratch'): what a run records beside its answers (each Answer also carries its own)."""
        return {label: manifest.fingerprint for label, manifest in self._loaded.items()}

    @contextmanager
    def generator_for(self, arm: Arm, group: str = "questions") -> Iterator[Generator | RemoteGenerator]:
        """The generator with `arm`'s weights for `group`'s rows active, held under the lock for the whole batch
        (in-process arms)."""
        if not self.runs_locally(arm):
            yield self._remote_generator(arm, group)  # no lock: the server batches concurrent requests
            return
        if self.engine == "ctranslate2":
            with self.lock:
                converted = self._converted_generator(arm, group)
            yield converted  # CTranslate2 runs concurrent calls side by side on shared weights
            return
        with self.lock:
            kind = KINDS[arm.adapter] if arm.adapter else None
            if kind is not None and kind.full_model:
                yield self._full_model_generator(arm, kind)
                return
            gen = self.generator()
            if kind is None:
                gen.fingerprint = None
                if hasattr(gen.model, "disable_adapter"):
                    with gen.model.disable_adapter():
                        yield gen
                else:
                    yield gen
                return
            folder = self.artifact_folder(kind, group)
            manifest = self._checked_manifest(arm, folder, self.weights_hash())
            name = self._label(kind, group)
            if self._stale(name, manifest):  # retrained since it was loaded: load the new weights
                del self._loaded[name]
                gen.model.delete_adapter(name)
            gen.model = adapters.attach_lora(gen.model, gen.tokenizer, folder, name)
            self._loaded[name] = manifest
            gen.fingerprint = manifest.fingerprint
            yield gen

    def _converted_generator(self, arm: Arm, group: str) -> Generator:
        """`arm`'s CTranslate2 model for `group`'s rows: the converted base, or its artifact merged and converted
        (on first use, checked against transformers), after checking the artifact's manifest."""
        base = self.generator()
        if arm.adapter is None:
            return engine_ct2.generator(self.settings, base, None)
        kind = KINDS[arm.adapter]
        folder = self.artifact_folder(kind, group)
        manifest = self._checked_manifest(arm, folder, self.weights_hash())
        # conversions are keyed by the artifact folder's content, so a retrained artifact gets its own
        converted = engine_ct2.generator(self.settings, base, folder)
        self._loaded[self._label(kind, group)] = manifest
        converted.fingerprint = manifest.fingerprint
        return converted

    def _remote_generator(self, arm: Arm, group: str) -> RemoteGenerator:
        """The backend's base model, or the LoRA module of this corpus's adapter after checking its manifest, the
        module loaded again first where the server holds an earlier training of it (`_current_module`)."""
        if arm.adapter is None:
            return self.backend().generator(self.settings.models.backend_model)
        kind = KINDS[arm.adapter]
        folder = self.artifact_folder(kind, group)
        manifest = self._checked_manifest(arm, folder, None)
        name = module_name(self.corpus, kind.name, self.artifact_group(kind, group))
        self._current_module(name, folder, manifest)
        remote = self.backend().generator(name)
        self._loaded[self._label(kind, group)] = manifest
        remote.fingerprint = manifest.fingerprint
        return remote

    def _current_module(self, name: str, folder: Path, manifest: adapters.AdapterManifest) -> None:
        """Make the server answer module `name` with the training `manifest` describes. The server says which path
        it loaded each module from, and ragft serves an adapter from a path named after its training
        (`versioned_folder`); where the server lists the module from another path (a retrain since, by this
        process or any other), it is loaded again at runtime (`Backend.load_adapter`: vLLM with
        VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). Checked with the server once per training a process sees (the
        manifest is read on every batch anyway); a module the server does not list is left to the 'does not serve'
        error, and one listed without a path (a server that does not say) is served as it is."""
        version = (manifest.fingerprint, manifest.created_at)
        if self._modules.get(name) == version:
            return
        backend = self.backend()
        with self._module_lock:
            if self._modules.get(name) == version:  # another thread checked it meanwhile
                return
            path = versioned_folder(self.settings, name, folder)
            root = backend.roots(refresh=True).get(name, str(path))
            if root is not None and root != str(path):
                try:
                    backend.load_adapter(name, path)
                except BackendError:
                    if backend.roots(refresh=True).get(name) != str(path):  # not loaded by another process instead
                        raise
            self._modules[name] = version

    def _full_model_generator(self, arm: Arm, kind: Kind) -> Generator:
        """A whole trained model (the scratch kind), loaded beside the base weights it shares a tokenizer with, once
        per training (loaded again when retrained)."""
        folder = self.artifact_folder(kind)
        base = self.generator()
        manifest = self._checked_manifest(arm, folder, self.weights_hash())
        name = self._label(kind)
        if name not in self._full_models or self._stale(name, manifest):
            from transformers import AutoModelForCausalLM

            with models.LOADING:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=base.model.dtype)
            model = model.to(base.model.device).eval()
            self._full_models[name] = Generator(model, base.tokenizer, str(folder), self.settings.generation)
            self._full_models[name].fingerprint = manifest.fingerprint
            self._loaded[name] = manifest
        return self._full_models[name]
