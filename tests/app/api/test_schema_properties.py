"""Property-based API test: schemathesis generates requests from the app's own OpenAPI schema.

Every operation gets valid and invalid inputs (odd ids, huge numbers, unknown arms, extra
fields, missing or wrong API keys). Checked with schemathesis' default checks: no 5xx (for a
ready service; /readyz answers 503 only while warming up), only documented status codes and
content types, responses matching their schemas, schema-valid requests accepted (the schema
carries this deployment's configured limits), and requests without the key refused. The app
serves the tiny fixture models over a real index, so query and chat requests really generate
and the rag arms really retrieve.

Operations are driven one by one with hypothesis rather than through
`schemathesis.pytest.from_fixture`, whose lazy loader breaks under pytest 9.
"""

import hypothesis
import pytest
import schemathesis
from ragft.service.app.api.main import create_app, warm_up
from ragft.service.runtime import Runtime
from schemathesis.checks import positive_data_acceptance

from tests.app.api.conftest import KEY


@pytest.fixture
def api_schema(with_api, settings, corpus):
    app = create_app(with_api(warm_up=False, max_tokens=16, api_keys=[KEY]), corpus)
    Runtime(settings, corpus).index()
    warm_up(app.state.runtime)  # a ready service: /readyz's 503 before warm-up is by design
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {KEY}"})


def test_generated_requests_get_documented_answers_and_never_a_server_error(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/query", "POST /v1/query/batch", "POST /v1/chat/completions", "POST /v1/runs",
            "DELETE /v1/runs/{run_id}", "PUT /v1/corpora/{name}/documents/{doc_id}",
            "GET /v1/runs/{run_id}/report"} <= labels, labels  # fmt: skip
    for operation in operations:
        # an upload's files are schema-valid whatever their bytes: whether they make a corpus (a readable sheet with
        # a question column...) only their content says, so a 422 there is no rejected valid request; every other
        # check (no 5xx, documented statuses and bodies) still runs on it
        content_decides = [positive_data_acceptance] if operation.label == "POST /v1/corpora" else []

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=15, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )  # fmt: skip
        def conforms(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=content_decides)  # noqa: B023 (called at once)

        conforms()


def test_the_schema_carries_the_configured_limits(api_schema):
    schemas = api_schema.raw_schema["components"]["schemas"]
    assert schemas["QueryRequest"]["properties"]["top_k"]["anyOf"][0]["maximum"] == 20
    assert schemas["BatchQueryRequest"]["properties"]["questions"]["maxItems"] == 64
    assert schemas["ChatRequest"]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 16
    assert schemas["QueryRequest"]["properties"]["max_new_tokens"]["anyOf"][0]["maximum"] == 16
    assert "401" in api_schema.raw_schema["paths"]["/v1/query"]["post"]["responses"]
