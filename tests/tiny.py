"""Tiny randomly initialised models built in code, so tests run the real loading code offline in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [
    "the",
    "a",
    "an",
    "is",
    "of",
    "to",
    "and",
    "in",
    "what",
    "how",
    "much",
    "does",
    "cost",
    "price",
    "when",
    "was",
    "released",
    "firmware",
    "version",
    "weight",
    "battery",
    "hours",
    "dock",
    "warranty",
    "months",
    "kestrel",
    "k2",
    "k4",
    "router",
    "camera",
    "costs",
    "$249",
    "$199",
    "1.2.3",
    "grams",
    "answer",
    "question",
    "passages",
    "i",
    "don't",
    "know",
    "based",
    "on",
    "provided",
    "documents",
    ".",
    ",",
    "?",
    "!",
    ":",
    ";",
    "[",
    "]",
    "{",
    "}",
    '"',
    "'",
    "yes",
    "no",
    "json",
    "product",
    "category",
    "priority",
]
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(folder)
    return hf


def build_generator(folder: Path, seed: int = 0) -> Path:
    """A 1-layer Llama with a word-level tokenizer and a chat template, saved like any HF model."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    tok = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def build_embedder(folder: Path, seed: int = 0) -> Path:
    """A 1-layer BERT + mean pooling saved as a sentence-transformers folder (like all-MiniLM-L6-v2)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    raw = folder.with_name(folder.name + "-bert")
    tok = build_tokenizer(raw)
    BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=512,
        )
    ).save_pretrained(raw)
    encoder = Transformer(str(raw), max_seq_length=128)
    SentenceTransformer(modules=[encoder, Pooling(16, "mean")], device="cpu").save(str(folder))
    return folder


def build_lora(folder: Path, generator_folder: Path, seed: int = 0) -> Path:
    """A LoRA adapter for the tiny generator with random (not zero) B matrices, so it changes answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(generator_folder, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def build_lora_below_int8_step(folder: Path, generator_folder: Path) -> Path:
    """A rank-1 LoRA that moves one q_proj weight a tenth of its int8 step towards the middle of its rounding bin:
    a real change in float32 that per-row int8 quantisation (step = row max / 127) rounds away."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(generator_folder, dtype=torch.float32)
    row = model.model.layers[0].self_attn.q_proj.weight[0].detach()
    amax = row.abs().max()
    col = int((row.abs() < amax).nonzero()[0])  # any weight but the row's largest, which sets the scale
    q = row[col] * 127 / amax
    delta = -0.1 * (amax / 127) * torch.sign(q - torch.round(q))
    peft_model = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=["q_proj"]))
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.zero_()[0, col] = 1.0
        layer.lora_B["default"].weight.zero_()[0, 0] = delta
    peft_model.save_pretrained(folder)
    return folder
