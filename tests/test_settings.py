import pytest
from pydantic import BaseModel, ValidationError

from service.settings import RetrievalSettings, Settings


def test_env_nested_override(monkeypatch):
    monkeypatch.setenv("RAGFT_RETRIEVAL__INDEX_KIND", "hnsw")
    monkeypatch.setenv("RAGFT_GENERATION__MAX_NEW_TOKENS", "12")
    s = Settings()
    assert s.retrieval.index_kind == "hnsw" and s.generation.max_new_tokens == 12


def test_overlap_must_be_below_chunk_length():
    with pytest.raises(ValidationError, match="chunk_overlap \\(50\\) must be smaller"):
        RetrievalSettings(chunk_tokens=50, chunk_overlap=50)


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if isinstance(field.default_factory, type) and issubclass(field.default_factory, BaseModel):
                walk(field.default_factory)

    walk(Settings)


def test_compose_environment_names_real_settings(monkeypatch):
    """docker-compose.yml configures ragft through env names; a renamed setting must fail here, not in a deploy."""
    import re
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
    assert compose["services"]["vllm"]["profiles"] == ["vllm"]
    for name, value in compose["services"]["ragft"]["environment"].items():
        monkeypatch.setenv(name, re.sub(r"\$\{RAGFT_BACKEND:-local\}", "openai", str(value)))
    settings = Settings()
    assert settings.models.generator_backend == "openai" and settings.models.backend_url == "http://vllm:8000/v1"
    assert settings.models.backend_model == "base" and settings.api.log_format == "json"
    assert str(settings.corpus) == "/app/corpora/quillmark"
