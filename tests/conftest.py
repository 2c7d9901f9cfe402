from __future__ import annotations

import os
from pathlib import Path

import pytest
from ragft.service.settings import (
    LOOPBACK_HOSTS,
    ApiSettings,
    GenerationSettings,
    LoraSettings,
    ModelSettings,
    RetrievalSettings,
    ScratchSettings,
    Settings,
)

from tests import tiny
from tests.stored_runs import stored_runs  # noqa: F401  (two stored runs of constructed answers)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return tiny.build_generator(root / "generator"), tiny.build_embedder(root / "embedder")


@pytest.fixture
def settings(tiny_models, tmp_path) -> Settings:
    generator, embedder = tiny_models
    return Settings(
        data_dir=tmp_path / "data",
        artifact_dir=tmp_path / "data" / "artifacts",
        corpus=tmp_path / "corpus",
        # transformers keeps the suite fast; tests/test_engine_ct2.py and the smoke tests run CTranslate2
        models=ModelSettings(generator=str(generator), embedder=str(embedder), engine="transformers"),
        retrieval=RetrievalSettings(chunk_tokens=24, chunk_overlap=4, top_k=2),
        generation=GenerationSettings(max_new_tokens=6, batch_size=4),
        lora=LoraSettings(rank=4, batch_size=2, epochs=2, max_seq_tokens=160, validation_fraction=0.25),
        scratch=ScratchSettings(layers=1, hidden_size=16, heads=2),
        api=ApiSettings(allowed_hosts=[*LOOPBACK_HOSTS, "testserver"]),  # TestClient's Host: 'testserver'
    )


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Three small documents and a few task rows, in the shipped format."""
    root = tmp_path / "corpus"
    (root / "documents").mkdir(parents=True)
    (root / "tasks").mkdir()
    (root / "documents" / "kestrel-k2.md").write_text(
        "# Kestrel K2\n\nThe Kestrel K2 router costs $249 and weighs 300 grams.\n"
    )
    (root / "documents" / "kestrel-k4.txt").write_text(
        "The Kestrel K4 router costs $199. Its firmware version is 1.2.3.\n"
    )
    (root / "documents" / "camera.html").write_text(
        "<html><style>x{}</style><body><h1>Camera</h1><p>The camera battery lasts 12 hours.</p></body></html>"
    )
    rows = [
        '{"id": "k1", "family": "knowledge", "split": "train", "question": "What does the Kestrel K2 cost?", "answers": ["$249"], "source_docs": ["kestrel-k2"]}',
        '{"id": "k2", "family": "knowledge", "split": "test", "question": "How much is a Kestrel K4?", "answers": ["$199"], "source_docs": ["kestrel-k4"]}',
        '{"id": "a1", "family": "abstention", "split": "test", "question": "What does the Kestrel K9 cost?"}',
    ]
    (root / "tasks" / "tasks.jsonl").write_text("\n".join(rows) + "\n")
    return root


FULL_ROWS = [
    {"id": "k3", "family": "knowledge", "split": "train", "question": "How much does the Kestrel K4 cost?",
     "answers": ["$199"], "source_docs": ["kestrel-k4"]},
    {"id": "k4", "family": "knowledge", "split": "test", "question": "What is the firmware version of the K4?",
     "answers": ["1.2.3"], "source_docs": ["kestrel-k4"], "kind": "unseen"},
    {"id": "k5", "family": "knowledge", "split": "test", "question": "How many hours does the camera battery last?",
     "answers": ["12 hours"], "source_docs": ["camera"], "kind": "unseen"},
    {"id": "k6", "family": "knowledge", "split": "test", "question": "What is the price of a Kestrel K4?",
     "answers": ["$199"], "source_docs": ["kestrel-k4"], "kind": "paraphrase", "paraphrase_of": "k3"},
    {"id": "b1", "family": "behaviour", "split": "train", "input": "the k2 router is broken", "kind": "label",
     "instruction": "Answer yes or no.", "labels": ["yes", "no"], "label": "yes"},
    {"id": "b2", "family": "behaviour", "split": "test", "input": "the camera is fine", "kind": "label",
     "instruction": "Answer yes or no.", "labels": ["yes", "no"], "label": "no"},
    {"id": "b3", "family": "behaviour", "split": "test", "input": "k2 router price", "kind": "json",
     "instruction": "Reply with JSON.", "schema": {"type": "object", "properties": {"product": {"type": "string"}},
     "required": ["product"]}, "expected": {"product": "k2"}},
    {"id": "b4", "family": "behaviour", "split": "test", "input": "is the dock good", "kind": "style",
     "instruction": "Start with yes or no.", "style": {"max_words": 12, "first_word_in": ["yes", "no"]}},
    {"id": "a0", "family": "abstention", "split": "train", "question": "When was the dock released?"},
    {"id": "f1", "family": "freshness", "split": "test", "question": "How much does the Kestrel K4 cost now?",
     "answers": ["$179"], "old_answers": ["$199"], "source_docs": ["kestrel-k4"]},
    {"id": "g1", "family": "general", "split": "test", "question": "What is the answer ?", "answers": ["yes"]},
    {"id": "g2", "family": "general", "split": "test", "question": "Is a router a product ?", "answers": ["yes"]},
]  # fmt: skip


@pytest.fixture
def full_corpus(corpus) -> Path:
    """The small corpus with every family, train rows for the adapters, and an updates/ folder."""
    import json

    with (corpus / "tasks" / "tasks.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in FULL_ROWS)
    (corpus / "updates").mkdir()
    (corpus / "updates" / "kestrel-k4.txt").write_text(
        "The Kestrel K4 router costs $179. Its firmware version is 1.2.3.\n"
    )
    return corpus


@pytest.fixture
def ragft(settings, monkeypatch, tmp_path):
    """(settings, run): the real `ragft` CLI on the tiny-model settings, reports under tmp_path; run(*args)."""
    from ragft.service.app import cli
    from typer.testing import CliRunner

    settings = settings.model_copy(
        update={"eval": settings.eval.model_copy(update={"reports_dir": tmp_path / "reports"})}
    )
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    runner = CliRunner()
    return settings, lambda *args: runner.invoke(cli.app, [str(a) for a in args], catch_exceptions=False)
