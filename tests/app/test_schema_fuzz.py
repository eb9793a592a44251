"""Schema fuzzing with schemathesis against the app's own OpenAPI document, sent to a real server process:
no 5xx, and every response matches the schema it documents."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.main import create_app
from facesearch.settings import Settings
from tests.app.client import call
from tests.conftest import Server, lfw_photo

schema = schemathesis.openapi.from_dict(create_app(Settings(data_dir=Path(tempfile.gettempdir()))).openapi())


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as d:
        s = Server(Path(d) / "data")
        s.wait_ready()
        status, _ = call(f"{s.url}/v1/identities/alice/faces", "POST", fields={"face": "largest"},
                         files=[("image", lfw_photo("Colin_Powell", 1))])
        assert status == 201
        yield s
        s.stop()


@schema.parametrize()
@settings(max_examples=int(os.environ.get("FACESEARCH_FUZZ_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, server: Server) -> None:  # type: ignore[no-untyped-def]
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500, response.text
    # schema-valid bytes that are not a photo, or a photo without a face, are rightly refused (400/422)
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
