import json

import pytest
import torch
from ragft.eval.running import pipeline
from ragft.eval.tasks import held_out_inputs, load_tasks, supervised_rows
from ragft.service.adapters import AdapterMismatch, artifact_dir
from ragft.service.arms import ARMS, Query, answer
from ragft.service.finetune import (
    Tokenized,
    TrainingCancelled,
    TrainingDataError,
    plan_stream,
    tokenize_example,
    train_artifact,
)
from ragft.service.generation import Generator
from ragft.service.kinds import KINDS
from ragft.service.models import load_generator
from ragft.service.runtime import Runtime
from ragft.service.training_data import TrainingExample

PHRASE = "I don't know based on the provided documents."


@pytest.fixture
def train_corpus(full_corpus):
    return full_corpus  # train rows: knowledge k1 and k3, behaviour b1, abstention a0


def inputs(settings, corpus):
    rows = load_tasks(corpus)
    return supervised_rows(rows, settings.generation.abstention_phrase), held_out_inputs(rows)


def train_all(settings, corpus, kind, **kw):
    """Through the pipeline, as the CLI, the job worker and the runner train (it indexes for rag_lora)."""
    runtime = pipeline.open_runtime(settings, corpus)
    return {r.group: r for r in pipeline.train_artifacts(settings, runtime, [KINDS[kind]], **kw)[kind]}


def train(settings, corpus, kind, **kw):
    """The artifact that answers questions (knowledge and abstention rows; scratch has one for every row)."""
    results = train_all(settings, corpus, kind, **kw)
    return results.get("questions", results.get(None))


@pytest.fixture
def generator(settings):
    model, tok, model_id = load_generator(settings.models, settings.artifact_dir)
    return Generator(model, tok, model_id, settings.generation)


def test_only_the_reply_and_its_end_token_are_learnt(generator):
    ex = TrainingExample("k1", [{"role": "user", "content": "what does the k2 cost ?"}], "$249")
    t = tokenize_example(generator, ex, max_tokens=64)
    reply = generator.tokenizer("$249", add_special_tokens=False)["input_ids"] + [generator.tokenizer.eos_token_id]
    assert t.labels[-len(reply) :] == reply and t.input_ids[-len(reply) :] == reply
    assert set(t.labels[: -len(reply)]) == {-100}
    prompt = generator.tokenizer(generator.render(ex.messages), add_special_tokens=False)["input_ids"]
    assert t.input_ids[: -len(reply)] == prompt and not t.truncated and t.loss_tokens == len(reply)
    short = tokenize_example(generator, ex, max_tokens=6)  # the prompt loses tokens from the left, the reply stays
    assert len(short.input_ids) == 6 and short.labels[-len(reply) :] == reply and short.truncated


def test_stream_stops_at_the_token_budget_and_is_seeded():
    items = [Tokenized([1] * n, [1] * n, f"r{n}") for n in range(1, 11)]  # 55 tokens per epoch
    stream = plan_stream(items, epochs=3, budget=100, batch_size=2, seed=0)
    assert 100 <= sum(len(t.input_ids) for t in stream) < 110
    assert plan_stream(items, 3, 100, 2, seed=0) == stream != plan_stream(items, 3, 100, 2, seed=1)
    assert sum(len(t.input_ids) for t in plan_stream(items, 2, None, 2, 0)) == 110  # epochs when no budget


def test_lora_trains_records_its_cost_is_reused_and_loads_in_the_arm(settings, train_corpus, generator):
    seen = []
    result = train(settings, train_corpus, "lora", progress=seen.append)
    m = result.manifest.model_dump()
    assert not result.reused and (result.folder / "adapter_model.safetensors").is_file()
    for key in ("base_model", "base_model_hash", "data_hash", "hyperparameters", "seed", "train_loss_final",
                "val_loss", "wall_s", "cpu_s", "tokens_processed", "trainable_params", "size_bytes", "peak_rss_mib"):  # fmt: skip
        assert m[key] is not None, key
    assert m["base_model"] == generator.model_id and m["tokens_processed"] > 0
    assert m["examples"]["by_variant"]["paraphrase"] == 2  # one per knowledge train row
    assert m["group"] == "questions" and set(m["training"]["families"]) == {"knowledge", "abstention", "documents"}
    assert not (result.folder / "checkpoints").exists()
    assert m["size_bytes"] == sum(p.stat().st_size for p in result.folder.rglob("*") if p.name != "manifest.json")
    assert m["loss_curve"]["train"] and not m["training"]["undertrained"]
    mine = [p for p in seen if p.kind == "lora/questions"]
    assert mine and mine[-1].step == m["steps"] and mine[-1].tokens_seen == m["tokens_processed"]

    again = train(settings, train_corpus, "lora")
    assert again.reused and again.manifest.fingerprint == m["fingerprint"]
    changed = settings.model_copy(update={"lora": settings.lora.model_copy(update={"rank": 2})})
    assert not train(changed, train_corpus, "lora").reused  # new hyperparameters, new adapter

    runtime = Runtime(changed, train_corpus)
    queries = [Query("what does the kestrel k2 cost ?")]
    with runtime.generator_for(ARMS["lora"]) as gen:
        adapted = gen.model.peft_config["lora-questions"].r
        assert adapted == 2
    assert answer(ARMS["lora"], runtime, queries)[0].arm == "lora"


def test_an_adapter_for_other_weights_is_refused(settings, train_corpus, tiny_models, tmp_path):
    train(settings, train_corpus, "lora")
    from tests import tiny

    other = tiny.build_generator(tmp_path / "other-weights", seed=1)  # same name and shape, different weights
    folder = artifact_dir(settings, train_corpus, "lora", "questions")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["base_model"] = str(other)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    moved = settings.model_copy(update={"models": settings.models.model_copy(update={"generator": str(other)})})
    with pytest.raises(AdapterMismatch, match="other weights"):
        answer(ARMS["lora"], Runtime(moved, train_corpus), [Query("what ?")])


def test_rag_lora_learns_from_retrieved_passages(settings, train_corpus):
    m = train(settings, train_corpus, "rag_lora").manifest.model_dump()
    variants = m["examples"]["by_variant"]
    assert variants.get("gold", 0) + variants.get("no-gold", 0) == 2  # knowledge train rows k1, k3
    assert "retrieval" in m["hyperparameters"]
    runtime = Runtime(settings, train_corpus)
    a = answer(ARMS["rag_lora"], runtime, [Query("how much is a kestrel k4 ?")])[0]
    assert len(a.passages) == settings.retrieval.top_k


def test_scratch_is_a_small_random_model_of_the_same_architecture(settings, train_corpus, generator):
    settings = settings.model_copy(update={"scratch": settings.scratch.model_copy(update={"hidden_size": 8})})
    m = train(settings, train_corpus, "scratch").manifest.model_dump()
    assert m["examples"]["by_variant"]["document_window"] >= 3
    assert m["trainable_params"] == m["total_params"] < sum(p.numel() for p in generator.model.parameters())
    config = json.loads((artifact_dir(settings, train_corpus, "scratch") / "config.json").read_text())
    assert config["model_type"] == generator.model.config.model_type and config["num_hidden_layers"] == 1
    a = answer(ARMS["scratch"], Runtime(settings, train_corpus), [Query("what does the kestrel k2 cost ?")])[0]
    assert a.arm == "scratch"


def test_cancelled_training_keeps_the_stored_artifact(settings, train_corpus):
    first = train(settings, train_corpus, "lora")
    before = (first.folder / "adapter_model.safetensors").read_bytes()
    with pytest.raises(TrainingCancelled):
        train(settings, train_corpus, "lora", should_stop=lambda: True, force=True)
    assert (first.folder / "adapter_model.safetensors").read_bytes() == before
    assert not list(first.folder.parent.glob("*.tmp-*"))  # the cancelled build left nothing behind


def test_a_training_killed_between_the_swap_renames_is_recovered(settings, train_corpus):
    first = train(settings, train_corpus, "lora")
    parked = first.folder.with_name(f"{first.folder.name}.tmp-1-dead")
    first.folder.rename(parked)  # what a kill -9 between the two renames of a swap leaves
    again = train(settings, train_corpus, "lora")
    assert again.reused and again.folder.is_dir() and not parked.exists()


def test_no_train_rows_is_a_clear_error(settings, corpus):
    with pytest.raises(TrainingDataError, match='"split": "train"'):
        train_artifact(settings, corpus, "lora", [])
    with pytest.raises(ValueError, match="unknown artifact kind"):
        train_artifact(settings, corpus, "bogus", inputs(settings, corpus)[0])
    assert {a.adapter for a in ARMS.values() if a.adapter} == set(KINDS)


def test_trained_adapter_changes_the_output(settings, train_corpus):
    train(settings, train_corpus, "lora")
    runtime = Runtime(settings, train_corpus)
    with runtime.generator_for(ARMS["lora"]) as gen:
        enc = gen.tokenizer("the answer", return_tensors="pt")
        with torch.no_grad():
            adapted = gen.model(**enc).logits
            with gen.model.disable_adapter():
                base = gen.model(**enc).logits
    assert not torch.allclose(adapted, base)


def test_a_one_step_run_still_trains(settings, corpus):
    """With a linear warm-up the first step has learning rate 0; a 1-step budget must still move the weights."""
    settings = settings.model_copy(update={"lora": settings.lora.model_copy(update={"min_steps": 1})})
    Runtime(settings, corpus).index()
    result = train(settings, corpus, "rag_lora")  # the small corpus has one train row: one optimizer step
    assert result.manifest.steps == 1
    with Runtime(settings, corpus).generator_for(ARMS["rag_lora"]):  # AdapterMismatch if it changed nothing
        pass


def test_per_family_and_joint_scopes_train_and_load(settings, train_corpus):
    per_family = train_all(settings, train_corpus, "lora")
    assert set(per_family) == {"questions", "behaviour"}
    behaviour = per_family["behaviour"].manifest
    assert set(behaviour.training["families"]) == {"behaviour"}  # no documents: knowledge injection is for facts
    assert behaviour.training["families"]["behaviour"]["epochs_reached"] >= 2
    runtime = Runtime(settings, train_corpus)
    label = answer(
        ARMS["lora"], runtime, [Query("the k2 router is broken", "Answer yes or no.", "behaviour", "behaviour")]
    )
    question = answer(ARMS["lora"], runtime, [Query("what does the kestrel k2 cost ?")])
    assert label[0].arm == question[0].arm == "lora"
    with runtime.generator_for(ARMS["lora"], "behaviour") as gen:
        assert {"lora-questions", "lora-behaviour"} <= set(gen.model.peft_config)

    joint = settings.model_copy(update={"lora": settings.lora.model_copy(update={"scope": "joint"})})
    only = train_all(joint, train_corpus, "lora")
    assert set(only) == {None}
    assert set(only[None].manifest.training["families"]) >= {"knowledge", "behaviour", "abstention"}
    assert answer(ARMS["lora"], Runtime(joint, train_corpus), [Query("what ?", adapter_group="behaviour")])


def test_an_undertrained_adapter_is_flagged(settings, train_corpus):
    capped = settings.model_copy(update={"lora": settings.lora.model_copy(update={"max_loss_tokens": 3})})
    m = train(capped, train_corpus, "lora").manifest
    assert m.training["undertrained"] and m.training["loss_tokens_for_configured_epochs"] > 3
    assert min(v["epochs_reached"] for f, v in m.training["families"].items() if f != "documents") < 1


def test_a_run_refuses_to_cut_the_system_message_off_its_examples(settings, train_corpus):
    short = settings.model_copy(update={"lora": settings.lora.model_copy(update={"max_seq_tokens": 40})})
    with pytest.raises(TrainingDataError, match="lose their system message"):
        train(short, train_corpus, "rag_lora")


def test_document_text_training_lowers_loss_on_a_document_sentence(settings, train_corpus, generator):
    sentence = "The Kestrel K4 router costs $199. Its firmware version is 1.2.3."
    enc = generator.tokenizer(sentence, return_tensors="pt")

    def loss(model) -> float:
        with torch.no_grad():
            return float(model(**enc, labels=enc["input_ids"]).loss)

    before = loss(generator.model)
    lr = settings.lora.model_copy(update={"epochs": 1, "document_epochs": 8, "learning_rate": 5e-3, "paraphrases": 0})
    result = train(settings.model_copy(update={"lora": lr}), train_corpus, "lora")
    assert result.manifest.training["families"]["documents"]["epochs_reached"] >= 8
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(generator.model, str(result.folder))
    assert loss(adapted) < before


def lora_batch(generator, rows=3, width=20, seed=0):
    """A LoRA-wrapped tiny model with a non-zero adapter path, and a right-padded batch with reply labels."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(generator.model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; give the adapter a non-zero path so its gradients are real
            torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(3, model.config.vocab_size, (rows, width))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    for r in range(rows):  # rows of different lengths, right-padded, each with a few reply tokens at its end
        length = width - (r * 5) % (width // 2)
        mask[r, length:] = 0
        labels[r, length - 3 : length] = ids[r, length - 3 : length]
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, compute):
    model.zero_grad()
    loss = compute()
    if loss.requires_grad:
        loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def budget_trainer(model, tmp_path, max_batch_tokens=None):
    from ragft.service.finetune import ReplyLogitsTrainer
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    return ReplyLogitsTrainer(model=model, args=args, max_batch_tokens=max_batch_tokens)


def test_reply_only_chunked_loss_gives_the_models_own_loss_and_gradients(generator, tmp_path, monkeypatch):
    """The LM head on reply positions only, in checkpointed chunks, must not change what is learnt."""
    from ragft.service import finetune

    model, batch = lora_batch(generator)
    count = int((batch["labels"][:, 1:] != -100).sum())
    trainer = budget_trainer(model, tmp_path)
    theirs, their_grads = loss_and_grads(model, lambda: model(**batch, num_items_in_batch=count).loss)
    for chunk in (512, 2):  # one chunk, and several recomputed in the backward pass
        monkeypatch.setattr(finetune, "LOSS_CHUNK_TOKENS", chunk)
        ours, our_grads = loss_and_grads(
            model, lambda: trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
        )
        assert ours == pytest.approx(theirs, rel=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(our_grads, their_grads, strict=True))
    assert any(g.abs().sum() > 0 for g in our_grads)
    mean = trainer.compute_loss(model, dict(batch))  # no count given (validation): this batch's mean
    assert mean.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)


@pytest.mark.parametrize("max_batch_tokens", [None, 64, 40, 20, 8])
def test_token_budget_batching_gives_one_big_batchs_loss_and_gradients(generator, tmp_path, max_batch_tokens):
    """A step split into sub-batches under lora.max_batch_tokens (down to one row each, and rows longer than the
    budget) backpropagates exactly the loss and gradients of the whole batch at once."""
    from ragft.service.finetune import split_batch

    model, batch = lora_batch(generator, rows=6, width=20)
    model.train()
    count = int((batch["labels"][:, 1:] != -100).sum())
    theirs, their_grads = loss_and_grads(model, lambda: model(**batch, num_items_in_batch=count).loss)
    trainer = budget_trainer(model, tmp_path, max_batch_tokens)
    trainer.create_optimizer()  # training_step reads the optimizer's mode
    ours, our_grads = loss_and_grads(model, lambda: trainer.training_step(model, dict(batch), count))
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(our_grads, their_grads, strict=True))
    parts = split_batch(batch, max_batch_tokens)
    assert sum(len(p["input_ids"]) for p in parts) == 6
    assert all(p["input_ids"].numel() <= (max_batch_tokens or 120) or len(p["input_ids"]) == 1 for p in parts)
    assert all(p["attention_mask"][:, -1].any() for p in parts)  # each trimmed to its longest row


def test_a_sub_batch_over_the_budget_recomputes_enough_layers_to_fit_it():
    from ragft.service.finetune import checkpoint_interval

    def part(tokens):
        return {"input_ids": torch.zeros(1, tokens)}

    assert checkpoint_interval(part(512), 512) is None and checkpoint_interval(part(4096), None) is None
    assert checkpoint_interval(part(700), 512) == 3  # a third of the layers recomputed; 27% would do
    assert checkpoint_interval(part(1024), 512) == 2 and checkpoint_interval(part(1664), 512) == 1


def test_a_small_training_set_takes_smaller_batches_for_enough_updates():
    from ragft.service.finetune import step_shape

    assert step_shape(44, 8, 1, min_steps=20) == (2, 1)  # 24 rows, 2 epochs: 22 updates, not 6
    assert step_shape(400, 8, 1, min_steps=20) == (8, 1)  # enough rows: the configured batch
    assert step_shape(10, 8, 1, min_steps=20) == (1, 1)  # never below one example
    assert step_shape(400, 8, 2, min_steps=20) == (8, 2)  # grad_accum multiplies the batch


# (kind, a settings change that makes the retrain a different artifact, what tells the loaded one apart)
RETRAINS = [
    ("lora", {"lora": {"rank": 2}}, lambda gen: gen.model.peft_config["lora-questions"].r),
    ("scratch", {"scratch": {"hidden_size": 8}}, lambda gen: gen.model.config.hidden_size),
]


@pytest.mark.parametrize(("kind", "change", "shape"), RETRAINS, ids=[r[0] for r in RETRAINS])
def test_a_retrained_artifact_is_what_answers_next(settings, train_corpus, kind, change, shape):
    """A server keeps its runtime while `ragft train --force` or POST /v1/adapters retrains beside it: the next
    answer must come from the new weights and say so, not from the ones loaded first."""
    arm, query = ARMS[kind], [Query("what does the kestrel k2 cost ?")]
    first = train(settings, train_corpus, kind).manifest
    runtime = Runtime(settings, train_corpus)
    before = answer(arm, runtime, query)[0]
    with runtime.generator_for(arm) as gen:
        old_shape = shape(gen)
    retrained = settings.model_copy(
        update={group: getattr(settings, group).model_copy(update=fields) for group, fields in change.items()}
    )
    second = train(retrained, train_corpus, kind).manifest
    assert second.fingerprint != first.fingerprint

    after = answer(arm, runtime, query)[0]  # the same runtime, as a server's
    with runtime.generator_for(arm) as gen:
        assert shape(gen) != old_shape  # the new weights are loaded
    assert (before.fingerprint, after.fingerprint) == (first.fingerprint, second.fingerprint)
    assert runtime.loaded_fingerprints() == {kind if kind == "scratch" else f"{kind}-questions": second.fingerprint}
    assert answer(ARMS["base"], runtime, query)[0].fingerprint is None


def test_memory_stays_flat_over_many_steps_on_a_few_hundred_short_documents(settings, train_corpus):
    """60+ optimizer steps over 300 short documents (a few long): every step's tokens are bounded by
    lora.max_batch_tokens, nothing is kept per step, and the manifest records this run's peak and each step's RSS."""
    import random

    from tests import tiny

    rng = random.Random(0)
    words = [w for w in tiny.WORDS if w.isalpha()]
    for i in range(300):
        n = 140 if i % 50 == 0 else rng.randint(5, 40)  # a few windows over the budget run alone, checkpointed
        (train_corpus / "documents" / f"note-{i:03d}.txt").write_text(" ".join(rng.choices(words, k=n)) + " .")
    lora = settings.lora.model_copy(update={"document_epochs": 2, "batch_size": 8, "max_batch_tokens": 96})
    m = train(settings.model_copy(update={"lora": lora}), train_corpus, "lora").manifest
    per_step = m.training["memory"]["rss_mib_per_step"]
    assert m.steps >= 60 and len(per_step) == m.steps, m.steps
    assert m.peak_rss_mib <= 3 * 1024 and m.peak_rss_mib >= max(per_step)
    first, last = per_step[5:25], per_step[-20:]  # after warm-up: the allocator and the optimizer state settle
    assert max(last) <= max(first) + 32, per_step  # MiB; growth per step would add up over 60 steps
    assert m.training["families"]["documents"]["epochs_reached"] == 2


def test_lora_on_the_top_layers_adapts_only_those_and_stops_the_backward_pass_there(settings):
    from ragft.service.finetune import trainable_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    top = settings.model_copy(update={"lora": settings.lora.model_copy(update={"top_layers": 1})})
    model, _ = trainable_model(KINDS["lora"], AutoModelForCausalLM.from_config(config), top)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"2"}
    linear = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if "lora_A" in n}
    assert linear == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    model.train()
    loss = model(input_ids=torch.randint(0, 32, (1, 8)), labels=torch.randint(0, 32, (1, 8))).loss
    lower = model.get_base_model().model.layers[1].mlp.down_proj  # not adapted: a plain Linear
    seen = []
    lower.register_full_backward_hook(lambda *a: seen.append(1))
    loss.backward()
    assert not seen  # nothing below the lowest adapted layer takes part in the backward pass


def test_a_sub_batch_that_predicts_nothing_still_backpropagates(generator, tmp_path):
    """A one-token document tail has no next token to learn; alone in a sub-batch it must add zero, not fail."""
    model, batch = lora_batch(generator, rows=2, width=20)
    batch["attention_mask"][1, 1:] = 0
    batch["labels"][1] = -100
    batch["labels"][1, 0] = batch["input_ids"][1, 0]  # a 1-token window: its one label is never a target
    count = int((batch["labels"][:, 1:] != -100).sum())
    trainer = budget_trainer(model, tmp_path, max_batch_tokens=20)
    trainer.create_optimizer()
    ours, _ = loss_and_grads(model, lambda: trainer.training_step(model, dict(batch), count))
    theirs, _ = loss_and_grads(model, lambda: model(**batch, num_items_in_batch=count).loss)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_each_adapter_group_trains_at_its_own_rate_and_epochs_and_only_its_own_key_it():
    from ragft.service.finetune import hyperparameters
    from ragft.service.settings import LoraSettings, Settings

    lora = LoraSettings(learning_rate=5e-4, learning_rate_by_group={"behaviour": 1e-3, "rag_lora/behaviour": 2e-3},
                        epochs=1, epochs_by_group={"lora/behaviour": 2})  # fmt: skip
    assert lora.for_group("lora", "behaviour").learning_rate == 1e-3
    assert lora.for_group("rag_lora", "behaviour").learning_rate == 2e-3  # '<kind>/<group>' before the group
    assert lora.for_group("lora", "questions").learning_rate == 5e-4 == lora.for_group("lora", None).learning_rate
    assert lora.for_group("lora", "behaviour").epochs == 2 and lora.for_group("rag_lora", "behaviour").epochs == 1
    settings = Settings(lora=lora)
    assert hyperparameters(settings, KINDS["lora"], "behaviour")["lora"]["learning_rate"] == 1e-3
    assert hyperparameters(settings, KINDS["lora"], "behaviour")["lora"]["epochs"] == 2
    # another group's rate or epochs, or a memory-only setting, leave this adapter's reuse key (and artifact) alone
    other = Settings(lora=lora.model_copy(update={"learning_rate_by_group": {"behaviour": 3e-3},
                                                  "epochs_by_group": {"behaviour": 3}, "mmap_threshold_kib": 256}))  # fmt: skip
    assert hyperparameters(other, KINDS["lora"], "questions") == hyperparameters(settings, KINDS["lora"], "questions")
    assert hyperparameters(other, KINDS["lora"], "behaviour") != hyperparameters(settings, KINDS["lora"], "behaviour")
    # no per-group entry: the key is the one the settings made before the tables existed
    plain = hyperparameters(Settings(lora=LoraSettings()), KINDS["lora"], "questions")["lora"]
    assert "learning_rate_by_group" not in plain and "epochs_by_group" not in plain


def test_every_kind_trains_by_the_recipe_of_its_settings_group():
    from ragft.service.finetune import RECIPES
    from ragft.service.kinds import KINDS

    assert {kind.settings_group for kind in KINDS.values()} <= set(RECIPES)
