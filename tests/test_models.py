import pytest
from ragft.service.models import ModelNotFound, load_embedder, load_generator, resolve_generator
from ragft.service.settings import ModelSettings


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("embedded:llama-70b", "Unknown embedded generator"),
        ("./no/such/folder", "neither an existing folder nor a hub id"),
    ],
)
def test_unknown_generators_say_what_to_set(spec, message):
    with pytest.raises(ModelNotFound, match=message):
        resolve_generator(ModelSettings(generator=spec))


def test_folder_without_config_or_gguf(tmp_path):
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_generator(ModelSettings(generator=str(tmp_path)))


def test_bad_embedder_spec():
    with pytest.raises(ModelNotFound, match="RAGFT_MODELS__EMBEDDER"):
        load_embedder(ModelSettings(embedder="not a model"))


def test_embedded_default_resolves_without_importing_llm():
    source = resolve_generator(ModelSettings())
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_loads_a_local_folder(settings):
    model, tokenizer, model_id = load_generator(settings.models, settings.artifact_dir)
    assert model_id == settings.models.generator and tokenizer.pad_token == "<pad>"
    assert next(model.parameters()).dtype.is_floating_point
