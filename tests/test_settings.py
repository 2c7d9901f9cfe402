import pytest
from pydantic import BaseModel, ValidationError
from ragft.service.settings import RetrievalSettings, Settings


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


@pytest.mark.parametrize("keys", [[""], ["short"], ["a-fine-key-0123456789", " " * 20]])
def test_empty_or_short_api_keys_are_refused_without_echoing_them(monkeypatch, keys):
    import json

    monkeypatch.setenv("RAGFT_API__API_KEYS", json.dumps(keys))
    with pytest.raises(ValidationError, match="RAGFT_API__API_KEYS") as refused:
        Settings()
    assert "at least 16" in str(refused.value) and all(k not in str(refused.value) for k in keys if k.strip())


def test_secrets_never_appear_in_dumps(monkeypatch):
    import json

    secrets = {"RAGFT_API__API_KEYS": '["api-key-0123456789abcdef"]', "RAGFT_MODELS__BACKEND_API_KEY": "backend-key-42",
               "RAGFT_EVAL__JUDGE_API_KEY": "judge-key-42"}  # fmt: skip
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.api.api_keys[0].get_secret_value() == "api-key-0123456789abcdef"
    assert s.models.backend_api_key.get_secret_value() == "backend-key-42"
    for text in (s.model_dump_json(), json.dumps(s.model_dump(), default=str), repr(s), str(s)):
        assert not any(key in text for key in ("api-key-0123456789abcdef", "backend-key-42", "judge-key-42"))


def test_the_shipped_deployment_is_closed_by_default(monkeypatch):
    """Compose publishes on 127.0.0.1 and reads keys from .env; the image runs as a non-root user; every name
    in .env.example is a real setting and its placeholder key is refused until replaced."""
    from pathlib import Path

    import yaml
    from dotenv import dotenv_values

    root = Path(__file__).parents[1]
    ragft = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["ragft"]
    assert all(port.startswith("127.0.0.1:") for port in ragft["ports"]) and ragft["env_file"] == [".env"]
    assert ragft["healthcheck"]["timeout"]
    dockerfile = (root / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert (
        ".env" in (root / ".dockerignore").read_text().split() and ".env" in (root / ".gitignore").read_text().split()
    )
    example = dotenv_values(root / ".env.example")
    assert set(example) == {"RAGFT_API__API_KEYS"}  # the optional ones are commented out
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="at least 16"):
        Settings()
