"""Trained artifacts the lora, rag_lora and scratch arms load, and the checks on loading.

An adapter that did not load must be an error, never a silent base model: loading checks
the manifest against the configured base model and then that the adapter changes logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from ragft.service.kinds import Kind, parse_kind
from ragft.service.settings import Settings

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class AdapterManifest(BaseModel):
    """What a trained artifact is and what it cost: written by `ragft.service.finetune`, read wherever an
    artifact is loaded, reused or reported. Unknown fields are kept, so older or newer manifests still load."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    manifest_version: int = MANIFEST_VERSION
    kind: str
    group: str | None = None  # adapter group (eval/families.py) under lora.scope=per_family; None: every row
    corpus: str
    created_at: str
    base_model: str
    base_model_hash: str | None = None
    data_hash: str
    fingerprint: str
    recipe_version: int | None = None
    hyperparameters: dict
    seed: int
    examples: dict
    training: dict | None = None  # per family: examples, epochs reached, loss tokens; undertrained flag
    loss_curve: dict | None = None  # {"train": [[step, loss]], "validation": [[step, loss]]}
    token_budget: int | None = None
    tokens_planned: int | None = None
    trainable_params: int
    total_params: int
    size_bytes: int
    versions: dict[str, str]
    steps: int | None = None
    max_steps: int | None = None
    stopped_early: bool | None = None
    train_loss_mean: float | None = None
    train_loss_final: float | None = None
    val_loss: float | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    tokens_processed: int | None = None
    tokens_per_s: float | None = None
    peak_rss_mib: float | None = None

    def summary(self) -> dict:
        """The figures a run records about the artifact it used (results.json `data.adapters`)."""
        keys = ("fingerprint", "base_model", "base_model_hash", "data_hash", "wall_s", "cpu_s", "tokens_processed",
                "tokens_per_s", "train_loss_final", "val_loss", "trainable_params", "size_bytes", "peak_rss_mib",
                "stopped_early", "examples", "training", "loss_curve", "group", "steps", "max_steps")  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST).write_text(self.model_dump_json(indent=2))


class ArtifactMissing(RuntimeError):
    """An arm's trained artifact does not exist yet; the message names the command that creates it."""


class AdapterMismatch(RuntimeError):
    """An artifact was trained for another base model, or did not change the model when applied."""


def artifact_dir(
    settings: Settings, corpus: Path, kind: Kind | str, group: str | None = None, replicate: int = 0
) -> Path:
    """Where the `kind` artifact trained on `corpus` lives; one folder per adapter group when it has one, and a
    sibling per extra training seed (`<folder>-seed<i>`, eval.training_seeds)."""
    name = kind.name if isinstance(kind, Kind) else parse_kind(kind).name
    folder = settings.artifact_dir / "adapters" / Path(corpus).resolve().name / name
    folder = folder / group if group else folder
    return folder.with_name(f"{folder.name}-seed{replicate}") if replicate else folder


def stored_manifest(folder: Path) -> AdapterManifest | None:
    """The manifest of a complete artifact at `folder`, or None (absent or unreadable: train it again)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return AdapterManifest.model_validate_json(path.read_text())
    except ValidationError:
        return None


def read_manifest(folder: Path, arm_name: str, corpus: Path) -> AdapterManifest:
    """The artifact's manifest, or ArtifactMissing saying how to train it."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactMissing(
            f"arm '{arm_name}' needs a trained artifact for corpus '{Path(corpus).name}' at {folder}, "
            f"and there is none. Create it with: ragft train --corpus {corpus} --arm {arm_name}"
        )
    try:
        return AdapterManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ArtifactMissing(f"{path} is not a valid manifest ({exc}); delete {folder} and train again.") from exc


def check_base_model(manifest: AdapterManifest, model_id: str, folder: Path, weights_hash: str | None = None) -> None:
    """Refuse an artifact trained on another base model, by name and, when both are known, by weights."""
    if manifest.base_model != model_id:
        raise AdapterMismatch(
            f"the artifact at {folder} was trained on base model '{manifest.base_model}', "
            f"but '{model_id}' is configured. Train it again for this model or configure that one."
        )
    stored = manifest.base_model_hash
    if weights_hash is not None and stored is not None and stored != weights_hash:
        raise AdapterMismatch(
            f"the artifact at {folder} was trained on other weights of '{model_id}' (hash {stored[:12]}, "
            f"now {weights_hash[:12]}): the model files changed. Train it again with --force."
        )


@torch.inference_mode()
def probe_logits(model, tokenizer) -> torch.Tensor:
    """Logits on a fixed probe text, used to prove an adapter changes the model."""
    enc = tokenizer("The answer to the question is", return_tensors="pt").to(model.device)
    return model(**enc).logits.float()


def attach_lora(model, tokenizer, folder: Path, name: str):
    """Load a LoRA adapter under `name` onto `model` (wrapping it in PeftModel once) and prove it applies."""
    from peft import PeftModel
    from ragft.service.models import LOADING

    if isinstance(model, PeftModel):
        if name in model.peft_config:
            model.set_adapter(name)
            return model  # checked when it was first loaded
        with LOADING:
            model.load_adapter(str(folder), adapter_name=name)
    else:
        with LOADING:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
    model.set_adapter(name)
    model.eval()
    with_adapter = probe_logits(model, tokenizer)
    with model.disable_adapter():
        without = probe_logits(model, tokenizer)
    if torch.equal(with_adapter, without):
        model.delete_adapter(name)  # leave the shared model as it was
        raise AdapterMismatch(
            f"the adapter at {folder} loaded but does not change the model's output (all-zero LoRA B matrices or "
            "target modules that do not exist in this model). Train it again."
        )
    return model
