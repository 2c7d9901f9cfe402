"""Trained artifacts the lora, rag_lora and scratch arms load, and the checks on loading.

An adapter that did not load must be an error, never a silent base model: loading checks
the manifest against the configured base model and then that the adapter changes logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from service.settings import Settings

MANIFEST = "manifest.json"


class ArtifactMissing(RuntimeError):
    """An arm's trained artifact does not exist yet; the message names the command that creates it."""


class AdapterMismatch(RuntimeError):
    """An artifact was trained for another base model, or did not change the model when applied."""


def artifact_dir(settings: Settings, corpus: Path, kind: str) -> Path:
    """Where the `kind` artifact ('lora', 'rag_lora', 'scratch') trained on `corpus` lives."""
    return settings.artifact_dir / "adapters" / Path(corpus).resolve().name / kind


def read_manifest(folder: Path, arm_name: str, corpus: Path) -> dict:
    """The artifact's manifest, or ArtifactMissing saying how to train it."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactMissing(
            f"arm '{arm_name}' needs a trained artifact for corpus '{Path(corpus).name}' at {folder}, "
            f"and there is none. Create it with: ragft train --corpus {corpus} --arm {arm_name}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactMissing(f"{path} is not valid JSON ({exc}); delete {folder} and train again.") from exc


def check_base_model(manifest: dict, model_id: str, folder: Path, weights_hash: str | None = None) -> None:
    """Refuse an artifact trained on another base model, by name and, when both are known, by weights."""
    if manifest.get("base_model") != model_id:
        raise AdapterMismatch(
            f"the artifact at {folder} was trained on base model '{manifest.get('base_model')}', "
            f"but '{model_id}' is configured. Train it again for this model or configure that one."
        )
    stored = manifest.get("base_model_hash")
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

    from service.models import LOADING

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
