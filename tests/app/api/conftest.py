import pytest
from ragft.service.settings import ApiSettings, Settings

KEY = "test-key-0123456789abcdef"  # api.api_keys wants 16+ characters


@pytest.fixture
def with_api(settings):
    """Settings with `api` fields changed and validated as at start-up (keys become SecretStr, short ones fail)."""

    def make(**changes) -> Settings:
        return settings.model_copy(update={"api": ApiSettings.model_validate(settings.api.model_dump() | changes)})

    return make
