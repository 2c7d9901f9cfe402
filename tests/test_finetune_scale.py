"""Training beyond one CPU process: DDP through `torchrun` around the same `ragft train`, the GPU settings.

The DDP test runs the documented command (`torchrun --nproc-per-node 2 <ragft> train ...`) on the tiny models with
the gloo backend, and one process with the same settings, and compares the loss of every step, the validation loss and the weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ragft.service.finetune import (
    ACTIVATION_FLOATS,
    OPTIMIZER_BYTES,
    TrainingDataError,
    batch_tokens_for_memory,
    mixed_precision,
    process_share,
)
from ragft.service.settings import ModelSettings, Settings
from safetensors.torch import load_file

RAGFT = Path(sys.executable).with_name("ragft")


def train_env(settings, data: Path) -> dict:
    """The tiny-model settings as the environment a `ragft` process reads."""
    return os.environ | {
        "RAGFT_DATA_DIR": str(data), "RAGFT_ARTIFACT_DIR": str(data / "artifacts"),
        "RAGFT_MODELS__GENERATOR": settings.models.generator, "RAGFT_MODELS__EMBEDDER": settings.models.embedder,
        "RAGFT_MODELS__ENGINE": "transformers", "RAGFT_MODELS__INTRA_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
        # 2 examples a step (1 per process under DDP), a quarter of the rows held out for validation
        "RAGFT_LORA__RANK": "4", "RAGFT_LORA__BATCH_SIZE": "2", "RAGFT_LORA__MIN_STEPS": "1",
        "RAGFT_LORA__EPOCHS": "4", "RAGFT_LORA__MAX_SEQ_TOKENS": "160", "RAGFT_LORA__VALIDATION_FRACTION": "0.25",
        "RAGFT_LORA__MAX_BATCH_TOKENS": "64", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }  # fmt: skip


def trained(data: Path, group: str) -> tuple[dict, dict]:
    folder = data / "artifacts" / "adapters"
    (manifest,) = folder.glob(f"*/lora/{group}/manifest.json")
    return json.loads(manifest.read_text()), load_file(manifest.with_name("adapter_model.safetensors"))


def test_ddp_on_two_cpu_processes_trains_what_one_process_trains(settings, full_corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    command = [str(RAGFT), "train", "--corpus", str(full_corpus), "--arm", "lora"]
    alone = subprocess.run(command, env=train_env(settings, one), capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    ddp = subprocess.run(torchrun + command, env=train_env(settings, two), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for group in ("behaviour", "questions"):
        (m1, w1), (m2, w2) = trained(one, group), trained(two, group)
        assert m2["training"]["memory"]["processes"] == 2 and m1["training"]["memory"]["processes"] == 1
        assert m1["steps"] == m2["steps"] > 1 and m1["fingerprint"] == m2["fingerprint"]  # one artifact, either way
        losses1, losses2 = (
            [loss for _, loss in m1["loss_curve"]["train"]],
            [loss for _, loss in m2["loss_curve"]["train"]],
        )
        assert losses2 == pytest.approx(losses1, rel=1e-3, abs=1e-3), group  # the curve is rounded to 4 places
        assert m2["train_loss_mean"] == pytest.approx(m1["train_loss_mean"], rel=1e-4)
        assert (m1["val_loss"] is None) == (group == "behaviour")  # one behaviour row: nothing to hold out
        if m1["val_loss"] is not None:  # counted over both processes and scaled back, as the training loss
            assert m2["val_loss"] == pytest.approx(m1["val_loss"], rel=1e-4)
        assert w1.keys() == w2.keys()
        for name in w1:
            torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5, msg=f"{group}: {name}")


@pytest.mark.parametrize(
    ("per_device", "accum", "processes", "share"),
    [(8, 1, 1, (8, 1)), (8, 1, 2, (4, 1)), (1, 4, 2, (1, 2)), (3, 1, 2, (2, 1)), (8, 2, 4, (2, 2))],
)
def test_processes_share_each_step(per_device, accum, processes, share):
    assert process_share(per_device, accum, processes) == share


SMOLLM2_135M = SimpleNamespace(num_hidden_layers=30, hidden_size=576)


def test_batch_tokens_are_sized_from_the_free_memory():
    params, trainable = 134_515_008, 4_884_480  # SmolLM2-135M, LoRA rank 16 on every linear layer
    per_token = ACTIVATION_FLOATS * 30 * 576 * 4
    tokens = batch_tokens_for_memory(8 * 2**30, SMOLLM2_135M, params, trainable, most=10**9)
    assert tokens % 64 == 0
    assert tokens == int((0.8 * 8 * 2**30 - 4 * params - OPTIMIZER_BYTES * trainable) // per_token) // 64 * 64
    assert 3000 < tokens < 3500  # about 2 MiB a token: the 1.5-2 MiB measured on the CPU, with room
    bf16 = batch_tokens_for_memory(8 * 2**30, SMOLLM2_135M, params, trainable, activation_bytes=2, most=10**9)
    assert bf16 // 64 == (2 * tokens) // 64 or abs(bf16 - 2 * tokens) <= 128
    assert batch_tokens_for_memory(80 * 2**30, SMOLLM2_135M, params, trainable, activation_bytes=2) == 65536  # cap
    assert batch_tokens_for_memory(4 * 2**30, SMOLLM2_135M, params, trainable) < tokens
    with pytest.raises(TrainingDataError, match="GiB free"):
        batch_tokens_for_memory(2**29, SMOLLM2_135M, params, trainable)


def test_cpu_training_stays_float32_and_auto_picks_what_torch_sees():
    assert mixed_precision(Settings()) is None
    assert ModelSettings(device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: bf16 training runs only on a GPU")
def test_cuda_trains_in_bf16_where_supported(settings, full_corpus):
    from ragft.eval.running import pipeline
    from ragft.service.kinds import KINDS

    gpu = settings.model_copy(update={"models": settings.models.model_copy(update={"device": "cuda"}),
                                      "lora": settings.lora.model_copy(update={"size_batches_to_memory": True})})  # fmt: skip
    (result, *_) = pipeline.train_artifacts(gpu, pipeline.open_runtime(gpu, full_corpus), [KINDS["lora"]])["lora"]
    memory = result.manifest.training["memory"]
    assert memory["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "float32")
    assert memory["device_free_bytes"] > 0 and memory["max_batch_tokens"] >= 64
    assert result.manifest.hyperparameters.get("precision") == mixed_precision(gpu)
