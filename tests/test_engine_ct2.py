import logging
import os
import sys

import numpy as np
import pytest
from pydantic import ValidationError
from ragft.service import adapters, engine_ct2, models
from ragft.service.generation import Generator, plan_batches
from ragft.service.settings import GenerationSettings, ModelSettings

from tests import tiny

pytest.importorskip("ctranslate2")

PROMPTS = [
    [{"role": "user", "content": "what is the price ?"}],
    [
        {"role": "system", "content": "answer the question"},
        {"role": "user", "content": "how much does the kestrel k2 cost ?"},
    ],
    [{"role": "user", "content": "yes"}],
    [{"role": "user", "content": "when was the firmware version released ?"}],
    [{"role": "user", "content": " ".join(["the kestrel k4 router costs $199 and weighs grams ."] * 12) + " price ?"}],
]


def _ct2_settings(settings, compute_type="float32", **generation):
    models_ = settings.models.model_copy(update={"engine": "ctranslate2", "compute_type": compute_type})
    return settings.model_copy(
        update={"models": models_, "generation": settings.generation.model_copy(update=generation)}
    )


def _base(settings) -> Generator:
    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    return Generator(model, tokenizer, model_id, settings.generation)


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine_ct2._MODELS.clear()
    yield
    engine_ct2._MODELS.clear()


def test_converted_base_answers_like_transformers_and_records_agreement(settings):
    s = _ct2_settings(settings, max_prompt_tokens=64)  # the last prompt is longer: both engines cut it on the left
    base = _base(s)
    gen = engine_ct2.generator(s, base, None)
    expected, got = base.generate(PROMPTS), gen.generate(PROMPTS)
    assert [g.text for g in got] == [g.text for g in expected]
    assert [g.prompt_tokens for g in got] == [g.prompt_tokens for g in expected]
    assert got[-1].prompt_tokens == 64
    assert [g.generated_tokens for g in got] == [g.generated_tokens for g in expected]
    assert gen.render(PROMPTS[0]) == base.render(PROMPTS[0]) and gen.engine == "ctranslate2-float32"
    manifest = gen.conversion
    assert manifest["agreement"]["rate"] == 1.0 and manifest["compute_type"] == "float32"
    assert gen.folder.is_relative_to(s.artifact_dir / "ct2")
    assert engine_ct2.generator(s, base, None).model is gen.model  # loaded once per process
    engine_ct2._MODELS.clear()
    stamp = (gen.folder / "model.bin").stat().st_mtime_ns
    assert engine_ct2.generator(s, base, None).folder == gen.folder  # converted once: reloaded, not rebuilt
    assert (gen.folder / "model.bin").stat().st_mtime_ns == stamp


def test_merged_adapter_answers_like_transformers_with_the_adapter(settings, tmp_path):
    s = _ct2_settings(settings)
    lora = tiny.build_lora(tmp_path / "corpus-x" / "lora", settings.models.generator)
    base = _base(s)
    converted_base = engine_ct2.generator(s, base, None)
    converted = engine_ct2.generator(s, base, lora)
    with_adapter = Generator(
        adapters.attach_lora(_base(s).model, base.tokenizer, lora, "lora"), base.tokenizer, base.model_id,
        s.generation,
    )  # fmt: skip
    assert [g.text for g in converted.generate(PROMPTS)] == [g.text for g in with_adapter.generate(PROMPTS)]
    assert not np.array_equal(converted.probe_logits(), converted_base.probe_logits())
    assert converted.folder != converted_base.folder and converted.folder.name.startswith("corpus-x-lora-float32-")
    agreement = converted.conversion["agreement"]
    assert agreement["rate"] == 1.0 and agreement["reference"] == "transformers float32 with the adapter"
    assert converted.conversion["adapter"] == str(lora)


def test_adapter_erased_by_int8_conversion_is_an_error(settings, tmp_path):
    lora = tiny.build_lora_below_int8_step(tmp_path / "faint", settings.models.generator)
    base = _base(settings)
    adapters.attach_lora(_base(settings).model, base.tokenizer, lora, "faint")  # changes float32 logits: no error
    engine_ct2.generator(_ct2_settings(settings, "float32"), base, lora)  # float32 keeps it
    s = _ct2_settings(settings, "int8")
    with pytest.raises(adapters.AdapterMismatch, match="erased the fine-tune.*COMPUTE_TYPE=float32"):
        engine_ct2.generator(s, base, lora)
    assert not any(p.name.startswith("faint") for p in (s.artifact_dir / "ct2").iterdir())  # nothing half-done kept


def test_untrained_adapter_is_an_error_before_any_conversion(settings, tmp_path):
    from peft import LoraConfig, get_peft_model

    folder = tmp_path / "untrained"
    get_peft_model(_base(settings).model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    with pytest.raises(adapters.AdapterMismatch, match="does not change the model's output"):
        engine_ct2.generator(_ct2_settings(settings), _base(settings), folder)


def test_whole_model_trained_with_the_base_tokenizer_converts_as_is(settings, tmp_path):
    s = _ct2_settings(settings)
    scratch = tiny.build_generator(tmp_path / "corpus-x" / "scratch", seed=1)  # other weights, same tokenizer
    base = _base(s)
    model, _, _ = models.load_generator(s.models.model_copy(update={"generator": str(scratch)}), s.artifact_dir)
    expected = Generator(model, base.tokenizer, str(scratch), s.generation).generate(PROMPTS)
    converted = engine_ct2.generator(s, base, scratch)
    assert [g.text for g in converted.generate(PROMPTS)] == [g.text for g in expected]
    assert [g.text for g in converted.generate(PROMPTS)] != [g.text for g in base.generate(PROMPTS)]
    assert converted.conversion["agreement"]["reference"] == "transformers float32"


def test_ct2_batches_keep_prompt_lengths_within_the_answer_length():
    lengths = [100, 382, 104, 130, 97]
    assert plan_batches(lengths, GenerationSettings(batch_size=8), max_spread=8) == [[4, 0, 2], [3], [1]]
    assert plan_batches(lengths, GenerationSettings(batch_size=8)) == [[4, 0, 2, 3, 1]]  # transformers pads instead


def test_stream_yields_the_answer_generate_gives(settings):
    s = _ct2_settings(settings, max_new_tokens=12)
    gen = engine_ct2.generator(s, _base(s), None)
    for prompt in PROMPTS[:3]:
        done = {}
        pieces = list(gen.stream(prompt, on_done=lambda g: done.update(g=g)))  # noqa: B023 - consumed at once
        [alone] = gen.generate([prompt])
        assert "".join(pieces).strip() == alone.text == done["g"].text
        assert (done["g"].prompt_tokens, done["g"].generated_tokens) == (alone.prompt_tokens, alone.generated_tokens)


def test_worked_examples_are_a_cached_static_prompt_with_the_same_answers(settings):
    s = _ct2_settings(settings, max_new_tokens=8, batch_size=4)
    gen = engine_ct2.generator(s, _base(s), None)
    shots = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "what is a k2 ?"},
             {"role": "assistant", "content": "a kettle"}]  # fmt: skip
    fewshot = [shots + [{"role": "user", "content": q}] for q in ("price of the k2 ?", "colour of the k9 ?")]
    prompts = [*fewshot, [{"role": "user", "content": "hello"}]]
    ids = gen._encode([gen.render(p) for p in prompts])
    statics = [gen.static_prefix(p, x) for p, x in zip(prompts, ids, strict=True)]
    assert statics[0] and statics[0] == statics[1] and statics[2] == ()  # only turns before the question, shared
    assert list(statics[0]) == ids[0][: len(statics[0])]
    answers = gen.generate(prompts)
    plain = gen.model.generate_batch([gen.tokenizer.convert_ids_to_tokens(x) for x in ids],
                                     include_prompt_in_result=False, beam_size=1, **gen._options(None))  # fmt: skip
    assert [a.text for a in answers] == [gen.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip()
                                         for r in plain]  # fmt: skip
    assert [a.prompt_tokens for a in answers] == [len(x) for x in ids]  # counted whole, static part included
    assert "".join(gen.stream(fewshot[0])).strip() == answers[0].text
    assert engine_ct2.by_static_prompt([[0, 1, 2, 3]], [(1,), (), (1,), ()]) == [[0, 2], [1, 3]]


def test_stream_ends_at_the_next_token_when_the_reader_goes_away(settings):
    import threading

    s = _ct2_settings(settings, max_new_tokens=12)
    gen = engine_ct2.generator(s, _base(s), None)
    [full] = gen.generate(PROMPTS[:1])
    stop, done = threading.Event(), {}
    stop.set()
    list(gen.stream(PROMPTS[0], stop=stop, on_done=lambda g: done.update(g=g)))
    assert full.generated_tokens > 1 and done["g"].generated_tokens == 1


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_eval_batches_are_fixed_by_the_call_so_reruns_give_the_same_answers(settings, compute_type):
    s = _ct2_settings(settings, compute_type, batch_size=3)
    gen = engine_ct2.generator(s, _base(s), None)
    first = [g.text for g in gen.generate(PROMPTS)]
    gen.generate(list(reversed(PROMPTS[:2])))  # another call in between leaves no state behind
    engine_ct2._MODELS.clear()
    again = engine_ct2.generator(s, _base(s), None)  # a rerun in a new process loads the stored conversion
    assert again.model is not gen.model and [g.text for g in again.generate(PROMPTS)] == first
    alone = engine_ct2.generator(_ct2_settings(settings, compute_type, batch_size=1), _base(s), None).generate(PROMPTS)
    assert {g.batch_size for g in alone} == {1} and max(g.batch_size for g in gen.generate(PROMPTS)) == 3
    if compute_type == "float32":  # float32 does not depend on the batch at all: batched equals one at a time
        assert [g.text for g in alone] == first


def test_batches_run_side_by_side_on_replicas_with_the_answers_of_one_at_a_time(settings):
    one = _ct2_settings(settings, batch_size=2)
    three = one.model_copy(update={"models": one.models.model_copy(update={"inter_threads": 3})})
    serial = engine_ct2.generator(one.model_copy(update={"models": one.models.model_copy(update={"inter_threads": 1})}),
                                  _base(one), None)  # fmt: skip
    parallel = engine_ct2.generator(three, _base(three), None)
    assert (serial.replicas, parallel.replicas) == (1, 3) and parallel.model is not serial.model
    expected = [(g.text, g.batch_size) for g in serial.generate(PROMPTS)]
    assert [(g.text, g.batch_size) for g in parallel.generate(PROMPTS)] == expected
    default = _ct2_settings(settings).models
    assert engine_ct2.replicas(default) == len(os.sched_getaffinity(0)) + 1  # one kept for queries


def test_side_by_side_batches_cost_their_share_of_the_wall_clock_not_their_latency(settings):
    """Batches on replicas each take longer than the machine time they use: their answers' costs must add up to
    the call's wall clock (the recorded cost once made the faster engine look slower)."""
    import time

    s = _ct2_settings(settings, batch_size=1)
    s = s.model_copy(update={"models": s.models.model_copy(update={"inter_threads": 3})})
    gen = engine_ct2.generator(s, _base(s), None)
    prompts = PROMPTS * 4
    t0 = time.perf_counter()
    out = gen.generate(prompts)
    wall_ms = (time.perf_counter() - t0) * 1000
    machine = sum(g.machine_ms / g.batch_size for g in out)
    latency = sum(g.latency_ms / g.batch_size for g in out)
    assert machine <= wall_ms and machine >= 0.5 * wall_ms  # the call's own time, less its encoding
    assert all(g.machine_ms <= g.latency_ms * 1.05 for g in out) and latency >= machine


def test_engine_selection_and_fallback_without_ctranslate2(settings, monkeypatch, caplog):
    assert engine_ct2.selected(ModelSettings()) == "ctranslate2"  # the default
    assert engine_ct2.selected(ModelSettings(engine="transformers")) == "transformers"
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="ragft.service.engine_ct2"):
        assert engine_ct2.selected(_ct2_settings(settings).models) == "transformers"
    assert "not installed: answering with transformers" in caplog.text
    with pytest.raises(engine_ct2.EngineUnavailable, match="pip install ctranslate2"):
        engine_ct2.generator(_ct2_settings(settings), _base(settings), None)


def test_float16_needs_cuda():
    with pytest.raises(ValidationError, match="float16.*needs a CUDA device"):
        ModelSettings(engine="ctranslate2", compute_type="float16", device="cpu")
    assert ModelSettings(engine="ctranslate2", compute_type="float16", device="cuda:1").compute_type == "float16"


def test_ct2_arms_generate_outside_the_runtime_lock_and_concurrent_calls_agree(settings, corpus):
    """A live query must not wait for a background batch: the lock covers finding the model, not generating."""
    import threading

    from ragft.service.arms import ARMS
    from ragft.service.runtime import Runtime

    runtime = Runtime(_ct2_settings(settings, max_new_tokens=8), corpus)
    free = []
    with runtime.generator_for(ARMS["base"]) as gen:
        other = threading.Thread(target=lambda: free.append(runtime.lock.acquire(timeout=0) and runtime.lock.release()))
        other.start()
        other.join()
        alone = [g.text for g in gen.generate(PROMPTS)]
    assert free == [None]  # another thread took the lock while this one held its generator
    answers: dict[int, list[str]] = {}

    def ask(i):
        with runtime.generator_for(ARMS["base"]) as g:
            answers[i] = [a.text for a in g.generate(PROMPTS)]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: alone for i in range(3)}


def test_a_retrained_adapter_gets_its_own_conversion(settings, full_corpus):
    """Conversions are keyed by the adapter folder's content, so a retrain beside a running server converts anew
    and the next answer comes from it, carrying the new fingerprint."""
    from ragft.eval.running import pipeline
    from ragft.service.arms import ARMS, Query, answer
    from ragft.service.kinds import KINDS
    from ragft.service.runtime import Runtime

    def train(s):
        runtime = pipeline.open_runtime(s, full_corpus)
        [result] = [r for r in pipeline.train_artifacts(s, runtime, [KINDS["lora"]])["lora"] if r.group == "questions"]
        return result.manifest.fingerprint

    first = train(settings)
    runtime = Runtime(_ct2_settings(settings, max_new_tokens=4), full_corpus)
    query = [Query("what does the kestrel k2 cost ?")]
    assert answer(ARMS["lora"], runtime, query)[0].fingerprint == first
    with runtime.generator_for(ARMS["lora"]) as gen:
        old = gen.folder
    second = train(settings.model_copy(update={"lora": settings.lora.model_copy(update={"rank": 2})}))
    assert answer(ARMS["lora"], runtime, query)[0].fingerprint == second != first
    with runtime.generator_for(ARMS["lora"]) as gen:
        assert gen.folder != old and gen.conversion["adapter_manifest"]["fingerprint"] == second


def _conversion(root, name: str, adapter: str | None, age_s: float):
    import json
    import os
    import time

    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"adapter": adapter, "compute_type": "float32"}))
    os.utime(folder, (time.time() - age_s, time.time() - age_s))
    return folder


def test_a_retrain_evicts_the_superseded_conversions_from_disk_and_memory(tmp_path, monkeypatch):
    """Each retrain plus a query converts again (~514 MB): past models.ct2_keep_conversions the older conversions
    of the same artifact go, on disk and in memory; other artifacts' conversions, and another corpus's adapter
    of the same name, stay."""
    import types
    from pathlib import Path

    from ragft.service.settings import Settings

    ct2 = tmp_path / "ct2"
    a = "/data/adapters/quillmark/lora/questions"
    old = _conversion(ct2, "lora-questions-float32-000000000001", a, 300)
    older = _conversion(ct2, "lora-questions-float32-000000000000", a, 600)
    other_corpus = _conversion(ct2, "lora-questions-float32-00000000000f", "/data/adapters/ostwick/lora/questions", 900)
    base = _conversion(ct2, "base-float32-000000000002", None, 900)
    new = _conversion(ct2, "lora-questions-float32-000000000003", a, 0)
    assert engine_ct2.evict_conversions(new, keep=2) == [older]
    assert old.is_dir() and new.is_dir() and base.is_dir() and other_corpus.is_dir()
    assert engine_ct2.evict_conversions(new, keep=1) == [old]

    loaded = {}
    monkeypatch.setattr(engine_ct2, "_MODELS", loaded)
    monkeypatch.setattr(engine_ct2, "_load_model", lambda folder, m, n: f"model of {folder.name}")
    monkeypatch.setattr(engine_ct2, "replicas", lambda m: 1)

    class Base:
        tokenizer = types.SimpleNamespace(pad_token="<pad>", chat_template="{{ x }}")
        model_id = "tiny"

    settings = Settings(models=ModelSettings(device="cpu"))
    newest = _conversion(ct2, "lora-questions-float32-000000000004", a, -10)
    for folder in (new, base, other_corpus, newest):
        engine_ct2._wrap(folder, Base(), settings)
    assert sorted(Path(k[0]).name for k in loaded) == sorted([newest.name, base.name, other_corpus.name])


def test_release_unloads_the_trained_artifacts_a_curve_loaded_and_keeps_the_rest(tmp_path, monkeypatch):
    """A curve releases after each point the converted models of artifacts it loaded (a 7-point curve held all 7
    to its end, 10.4 GiB): trained artifacts loaded before it (a server's) and the base model stay."""
    from pathlib import Path

    ct2 = tmp_path / "ct2"
    served = _conversion(ct2, "behaviour-float32-000000000003", str(tmp_path / "adapters" / "quillmark" / "lora"), 0)
    base = _conversion(ct2, "base-float32-000000000004", None, 0)
    loaded = {(str(f), "cpu", "float32", 0, 1): f"model of {f.name}" for f in (served, base)}
    monkeypatch.setattr(engine_ct2, "_MODELS", loaded)
    kept = engine_ct2.loaded_artifacts()
    assert {Path(k[0]).name for k in kept} == {served.name}  # the base model is no trained artifact

    view = tmp_path / "adapters" / "quillmark-curve-25"
    for f in (_conversion(ct2, "behaviour-float32-000000000001", str(view / "lora" / "behaviour"), 0),
              _conversion(ct2, "quillmark-curve-25-scratch-float32-000000000002", str(view / "scratch"), 0)):  # fmt: skip
        loaded[(str(f), "cpu", "float32", 0, 1)] = f"model of {f.name}"
    assert engine_ct2.release(engine_ct2.loaded_artifacts() - kept) == 2
    assert sorted(Path(k[0]).name for k in loaded) == sorted([served.name, base.name])
    assert engine_ct2.release(engine_ct2.loaded_artifacts() - kept) == 0
