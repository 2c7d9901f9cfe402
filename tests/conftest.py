from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings import GenerationSettings, ModelSettings, RetrievalSettings, Settings
from tests import tiny

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
        models=ModelSettings(generator=str(generator), embedder=str(embedder)),
        retrieval=RetrievalSettings(chunk_tokens=24, chunk_overlap=4, top_k=2),
        generation=GenerationSettings(max_new_tokens=6, batch_size=4),
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
