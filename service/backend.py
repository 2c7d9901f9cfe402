"""Generation on an OpenAI-compatible server (vLLM, llama.cpp's server, another ragft) instead of in-process.

For teams with GPUs: vLLM serves the base model and each LoRA adapter as its own module
(`--enable-lora --lora-modules <corpus>-<adapter>=<folder>`) and batches concurrent requests
itself; ragft still builds the prompts, retrieves, trains and scores. Decoding is greedy
(temperature 0), as in-process. An arm whose module the server does not list is an error,
never a silent answer from the base model.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ragft.service.generation import Generation, Messages
from ragft.service.settings import GenerationSettings, ModelSettings, Settings


class BackendError(RuntimeError):
    """The backend cannot answer for a configuration reason; the message says what to change."""


class BackendUnavailable(BackendError):
    """The backend did not answer at all (down, wrong URL, timeout)."""


def module_name(corpus: Path, adapter: str, group: str | None = None) -> str:
    """The name a LoRA arm asks the backend for: unique per corpus (and adapter group), as adapters are."""
    return f"{Path(corpus).resolve().name}-{adapter}" + (f"-{group}" if group else "")


def adapter_modules(settings: Settings, corpus: Path) -> dict[str, Path]:
    """Every LoRA adapter trained on `corpus` a server can serve, by module name ('<corpus>-<adapter>[-<group>]'),
    each as the path of its current training (`versioned_folder`)."""
    from ragft.service import adapters
    from ragft.service.kinds import KINDS

    modules = {}
    for kind in (k for k in KINDS.values() if k.remote_servable):
        root = adapters.artifact_dir(settings, corpus, kind)
        for config in sorted([root / "adapter_config.json", *root.glob("*/adapter_config.json")]):
            if config.is_file():
                group = None if config.parent == root else config.parent.name
                name = module_name(corpus, kind.name, group)
                modules[name] = versioned_folder(settings, name, config.parent)
    if not modules:
        raise BackendError(
            f"no LoRA adapter is trained for corpus '{Path(corpus).resolve().name}' under "
            f"{settings.artifact_dir / 'adapters'}. Train them first: ragft train --corpus {corpus}"
        )
    return modules


def versioned_folder(settings: Settings, name: str, folder: Path) -> Path:
    """The path a server loads module `name` from: `<artifact_dir>/served/<name>-<fingerprint>-<trained at>`, a
    link to the adapter's folder named after the training its manifest describes (made here when missing). A
    server reports the path it loaded each module from (vLLM: `root` in GET /v1/models), so any ragft process can
    tell whether the server holds the current training or one a retrain replaced, and loads it again from a new
    path, which vLLM asks for (reloading in place from the same path keeps prefix-cache blocks of the old weights).
    Links of earlier trainings stay: a server still serving one reads the folder's current files should it need
    the module from disk again."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    trained = "".join(c for c in str(manifest.get("created_at", ""))[:19] if c.isalnum())
    link = (settings.artifact_dir / "served").resolve() / f"{name}-{str(manifest['fingerprint'])[:12]}-{trained}"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        scratch = link.with_name(f".{link.name}.{threading.get_ident()}.tmp")
        scratch.unlink(missing_ok=True)
        # relative: the same link works where the data folder is mounted elsewhere (a vLLM container's /data)
        scratch.symlink_to(os.path.relpath(Path(folder).resolve(), link.parent), target_is_directory=True)
        scratch.replace(link)  # atomic: a concurrent process making the same link loses nothing
    return link


# vLLM's `--max-lora-rank` takes one of these; an adapter's rank is rounded up to the next.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_arguments(settings: Settings, corpus: Path) -> list[str]:
    """`vllm serve` arguments for the generator and every LoRA adapter trained on `corpus`, one module each."""
    from ragft.service import models

    modules = adapter_modules(settings, corpus)
    rank = max(int(json.loads((folder / "adapter_config.json").read_text())["r"]) for folder in modules.values())
    model = models.servable_folder(settings.models, settings.artifact_dir)
    return ["--model", model, "--served-model-name", settings.models.backend_model or "base",
            "--enable-lora", "--max-lora-rank", str(next((r for r in VLLM_LORA_RANKS if r >= rank), rank)),
            "--max-loras", str(len(modules)),
            "--lora-modules", *(f"{name}={folder}" for name, folder in modules.items())]  # fmt: skip


def load_adapters(settings: Settings, corpus: Path) -> list[str]:
    """(Re)load every adapter trained on `corpus` into the running vLLM server under its module name, without a
    restart (`Backend.load_adapter`); returns the names loaded. A server on another machine must see the same
    folders (a shared data volume)."""
    backend = Backend(settings.models, settings.generation)
    modules = adapter_modules(settings, corpus)
    for name, folder in modules.items():
        backend.load_adapter(name, folder)
    return list(modules)


class Backend:
    """One client for the server; hands out a generator per served model name."""

    def __init__(self, models: ModelSettings, generation: GenerationSettings):
        from openai import OpenAI

        self.url = models.backend_url
        self.settings = models
        self.generation = generation
        self.client = OpenAI(
            base_url=models.backend_url,
            api_key=models.backend_api_key.get_secret_value() if models.backend_api_key else "unused",
            timeout=models.backend_timeout_s,
            max_retries=2,
        )
        self._served: dict[str, str | None] | None = None
        self._lock = threading.Lock()

    def served(self, refresh: bool = False) -> set[str]:
        """Model names the server lists (its base model and LoRA modules)."""
        return set(self.roots(refresh))

    def roots(self, refresh: bool = False) -> dict[str, str | None]:
        """Each model name the server lists with the path it loaded it from (vLLM's `root`; None where a server
        does not say)."""
        import openai

        with self._lock:
            if self._served is None or refresh:
                try:
                    self._served = {m.id: getattr(m, "root", None) for m in self.client.models.list()}
                except (openai.APIConnectionError, openai.APIStatusError) as exc:
                    raise BackendUnavailable(
                        f"the generator backend at {self.url} did not answer GET /models ({exc}). Start it (for "
                        "vLLM: docker compose --profile vllm up) or fix RAGFT_MODELS__BACKEND_URL."
                    ) from exc
            return dict(self._served)

    def load_adapter(self, name: str, folder: Path) -> None:
        """Serve the LoRA adapter in `folder` as module `name` from now on: unloaded first when the server lists it,
        then loaded (`POST /unload_lora_adapter`, `/load_lora_adapter`: a retrain is picked up without a restart;
        vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
        import httpx

        key = self.settings.backend_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        url = (self.url or "").rstrip("/")
        steps = [("unload", {"lora_name": name})] if name in self.served(refresh=True) else []
        steps.append(("load", {"lora_name": name, "lora_path": str(folder)}))  # a versioned_folder link: unresolved
        with httpx.Client(timeout=self.settings.backend_timeout_s, headers=headers) as client:
            for step, body in steps:
                try:
                    response = client.post(f"{url}/{step}_lora_adapter", json=body)
                except httpx.HTTPError as exc:
                    raise BackendUnavailable(f"the generator backend at {url} did not answer: {exc}") from exc
                if response.status_code == 404:
                    raise BackendError(
                        f"the backend at {url} has no /{step}_lora_adapter: start vLLM with "
                        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (bench/vllm_cpu.sh serve sets it)"
                    )
                if response.is_error:
                    raise BackendError(f"the backend at {url} did not {step} {name} ({folder}): {response.text}")
        self.served(refresh=True)

    def generator(self, model: str) -> RemoteGenerator:
        if model not in self.served() and model not in self.served(refresh=True):
            raise BackendError(
                f"the backend at {self.url} does not serve '{model}' (it serves {sorted(self.served())}). "
                f"For a LoRA arm, start vLLM with --enable-lora --lora-modules {model}=<adapter folder>; "
                "`ragft backend vllm-args --corpus <corpus>` prints the arguments for every trained adapter."
            )
        return RemoteGenerator(self, model)


class RemoteGenerator:
    """The `Generator` interface (generate, stream) answered by the backend under one model name."""

    fingerprint: str | None = None  # as `Generator.fingerprint`

    def __init__(self, backend: Backend, model: str):
        self.backend = backend
        self.model_id = model

    def _request(self, messages: Messages, max_new_tokens: int | None, **extra):
        import openai

        try:
            return self.backend.client.chat.completions.create(
                model=self.model_id,
                messages=messages,
                max_tokens=max_new_tokens or self.backend.generation.max_new_tokens,
                temperature=0.0,
                **extra,
            )
        except openai.APIConnectionError as exc:
            raise BackendUnavailable(f"the generator backend at {self.backend.url} did not answer: {exc}") from exc
        except openai.APIStatusError as exc:
            raise BackendError(f"the generator backend refused a request for '{self.model_id}': {exc}") from exc

    def generate(self, prompts: list[Messages], max_new_tokens: int | None = None) -> list[Generation]:
        """One answer per prompt, in order; requests go out concurrently and the server batches them."""
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(self.backend.settings.backend_concurrency, len(prompts) or 1)) as pool:
            responses = list(pool.map(lambda m: self._request(m, max_new_tokens), prompts))
        latency_ms = (time.perf_counter() - t0) * 1000
        return [_generation(r.choices[0].message.content, r.usage, latency_ms, len(prompts)) for r in responses]

    def stream(self, messages: Messages, max_new_tokens: int | None = None, on_done=None, stop=None):
        """Yield the answer piece by piece; `on_done(Generation)` gets the server's token counts. Setting
        `stop` (a threading.Event) closes the request at the next chunk."""
        t0 = time.perf_counter()
        pieces, usage = [], None
        response = self._request(messages, max_new_tokens, stream=True, stream_options={"include_usage": True})
        for chunk in response:
            if stop is not None and stop.is_set():
                response.close()
                break
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    pieces.append(choice.delta.content)
                    yield choice.delta.content
        if on_done is not None:
            on_done(_generation("".join(pieces), usage, (time.perf_counter() - t0) * 1000, 1))


def _generation(text: str | None, usage, latency_ms: float, batch_size: int) -> Generation:
    """A Generation from the server's text and `usage` (token counts are 0 when a server sends none)."""
    return Generation((text or "").strip(), usage.prompt_tokens if usage else 0,
                      usage.completion_tokens if usage else 0, latency_ms, batch_size)  # fmt: skip
