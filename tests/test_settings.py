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
