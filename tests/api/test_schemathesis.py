"""schemathesis against our /openapi.json: no generated input gets a 5xx (slow; ./run-tests.sh -m slow).

Generation routes (txt2img, img2img, extras, ControlNet detect) are left out here: a valid random body runs a real
generation, which on a CPU takes minutes per case. Their bad-input handling is covered by the API tests.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402

from webui.app import build_app  # noqa: E402
from webui.config import parse  # noqa: E402


@pytest.fixture
def api_app(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    app = build_app(config)
    with TestClient(app):  # runs the lifespan: the queue worker is up
        yield app


@pytest.mark.slow
def test_no_server_error_on_generated_input(api_app):
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    heavy = ("txt2img", "img2img", "extra-", "detect", "reload-checkpoint", "refresh-checkpoints")
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if any(h in operation.path for h in heavy):
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call()
            calls.append(case.path)
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text[:200]))

        run()
    assert len(set(calls)) >= 15 and len(calls) >= 60  # the schema really was exercised
    assert failures == []
