"""The committed OpenAPI document is the contract: it must equal what the code generates, and the
API must honour it (schemathesis: no 5xx, responses match their schemas and documented statuses)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.app import create_app

COMMITTED = Path(__file__).parent.parent / "openapi" / "openapi.json"

schema = schemathesis.openapi.from_path(COMMITTED)
schema.app = create_app()


def test_committed_openapi_matches_the_code():
    from service.openapi import render

    generated = json.loads(render())
    committed = json.loads(COMMITTED.read_text())
    assert generated == committed, "openapi/openapi.json is stale: run `rewards openapi` and commit it"


def test_openapi_is_3_1_and_every_operation_documents_problem_responses():
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1"):
                assert {"401", "403", "422"} <= set(operation["responses"]), f"{method} {path}"


@pytest.fixture
def seeded(keys, client):
    client.post("/v1/products/ARAY-CINEMA-2000/codes", content="SCHEMA-1\nSCHEMA-2\n",
                headers={**keys.header("admin"), "Content-Type": "text/csv"})
    return keys


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_honours_its_openapi_document(case, seeded):
    case.call_and_validate(headers=seeded.header("admin"))
