from ragft.service import models
from ragft.service.generation import Generator


def _generator(settings, batch_size):
    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    return Generator(model, tokenizer, model_id, settings.generation.model_copy(update={"batch_size": batch_size}))


PROMPTS = [
    [{"role": "user", "content": "what is the price ?"}],
    [
        {"role": "system", "content": "answer the question"},
        {"role": "user", "content": "how much does the kestrel k2 cost ?"},
    ],
    [{"role": "user", "content": "yes"}],
]


def test_batched_equals_one_by_one_and_keeps_order(settings):
    batched = _generator(settings, 3).generate(PROMPTS)
    single = _generator(settings, 1).generate(PROMPTS)
    assert [g.text for g in batched] == [g.text for g in single]  # left padding does not change greedy output
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in single]
    assert batched[0].prompt_tokens < batched[1].prompt_tokens
    assert all(0 < g.generated_tokens <= settings.generation.max_new_tokens for g in batched)
    assert {g.batch_size for g in batched} == {3} and {g.batch_size for g in single} == {1}


def test_generation_is_deterministic(settings):
    gen = _generator(settings, 2)
    assert [g.text for g in gen.generate(PROMPTS)] == [g.text for g in gen.generate(PROMPTS)]


def test_prompt_token_count_matches_rendered_chat(settings):
    gen = _generator(settings, 2)
    [out] = gen.generate(PROMPTS[:1])
    assert out.prompt_tokens == gen.count_tokens(PROMPTS[0])
    assert gen.render(PROMPTS[0]).endswith("<s> assistant : ")


def test_long_prompts_go_in_smaller_batches(settings):
    gen = _generator(settings, 3)
    texts = [gen.render(p) for p in PROMPTS]
    lengths = [len(gen.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    gen.settings = gen.settings.model_copy(update={"max_batch_tokens": 2 * max(lengths)})
    batches = gen._batches(texts)
    assert sorted(i for b in batches for i in b) == [0, 1, 2]
    assert all(len(b) * max(lengths[i] for i in b) <= 2 * max(lengths) for b in batches)
    assert len(batches) == 2  # the two short prompts together, the long one alone


def test_tokenizer_calls_take_turns_across_threads(settings):
    """Generators on several threads share one fast tokenizer, which refuses concurrent changes to its settings."""
    import threading

    from ragft.service import generation

    gen = _generator(settings, 2)
    counted = threading.Event()
    with generation._TOKENIZE:  # another thread is encoding
        worker = threading.Thread(target=lambda: (gen.count_tokens(PROMPTS[0]), counted.set()))
        worker.start()
        assert not counted.wait(0.2)  # this one waits for its turn
    worker.join(timeout=10)
    assert counted.is_set()


def test_a_failing_generate_ends_the_stream_instead_of_blocking(settings):
    """If generate() raises in its thread, the streamer never gets its end: the reader must not wait for ever
    holding the model lock."""
    import threading

    from ragft.service import models
    from ragft.service.generation import Generator

    model, tokenizer, model_id = models.load_generator(settings.models, settings.artifact_dir)
    gen = Generator(model, tokenizer, model_id, settings.generation)

    def broken(**kwargs):
        raise RuntimeError("CUDA out of memory")

    gen.model.generate = broken
    outcome: list = []

    def read() -> None:
        try:
            list(gen.stream([{"role": "user", "content": "yes"}], 3))
        except RuntimeError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive() and outcome == ["CUDA out of memory"]
