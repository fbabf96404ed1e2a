"""Schemathesis against both services' OpenAPI documents, through the gateway.

Each service's document is loaded from the gateway (``/api/openapi.json``,
``/processor/openapi.json``; their ``servers`` entry is the gateway prefix, so every generated
request goes through nginx). Every operation is fuzzed with valid (positive) and invalid
(negative) data, deterministically (``derandomize``), and every response must pass:

- ``not_a_server_error``: no 5xx, whatever the input;
- ``response_schema_conformance``: a documented status' body matches its schema;
- ``error_envelope`` (ours): every 4xx, from a service or from the gateway, is the JSON envelope
  ``{"error": {"code", "message", "request_id"}}`` with the request id of the response header.

At least 1,000 generated cases run per service. processor-svc's ``/process`` sleeps 0.5 s per
valid call, so for this module it runs with ``PROCESS_DELAY_SECONDS=0.01`` (restored after).
"""

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from stackctl.native import NativeStack

MIN_CASES_PER_SERVICE = 1000
PROFILE = "e2e-schemathesis"
hypothesis.settings.register_profile(
    PROFILE,
    deadline=None,  # each example is an HTTP round trip through the gateway
    derandomize=True,  # the same cases on every run: a failure reproduces
    database=None,  # nothing written to .hypothesis/
    print_blob=True,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    # These are about generation speed and rejection rates, never about the API's answers.
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ),
)
ENVELOPE_KEYS = {"code", "message", "request_id"}
AnyCase = Case[Any]  # a case of any operation


@schemathesis.check
def error_envelope(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Every 4xx is our JSON envelope, with the response's request id (HEAD has no body)."""
    del ctx  # the check's signature is fixed
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} with Content-Type {content_type!r}: {response.content[:200]!r}"
    )
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert error.keys() >= ENVELOPE_KEYS, body
    assert all(isinstance(error[key], str) and error[key] for key in ENVELOPE_KEYS), body
    assert error["request_id"] == (response.headers.get("x-request-id") or [""])[0], body
    return None


CHECKS = [not_a_server_error, response_schema_conformance, error_envelope]


@pytest.fixture(scope="module")
def fast_processor(stack: NativeStack) -> Iterator[None]:
    """processor-svc with 10 ms of simulated work instead of 0.5 s, for this module only."""
    stack.stop("processor-svc")
    stack.respawn("processor-svc", env={"PROCESS_DELAY_SECONDS": "0.01"})
    try:
        yield
    finally:
        stack.stop("processor-svc")
        stack.respawn("processor-svc")


def _case_runner(
    label: str, cases: Counter[str], session: requests.Session
) -> Callable[[AnyCase], None]:
    def run_case(case: AnyCase) -> None:
        cases[label] += 1
        case.call_and_validate(session=session, checks=CHECKS, timeout=30)

    return run_case


def _fuzz(schema: Any, max_examples: int) -> tuple[Counter[str], list[str]]:
    """Every operation, positive and negative; returns cases run per operation and failures."""
    cases: Counter[str] = Counter()
    failures: list[str] = []
    session = requests.Session()
    settings = hypothesis.settings(
        hypothesis.settings.get_profile(PROFILE), max_examples=max_examples
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            test: Callable[[], None] = settings(
                given(case=operation.as_strategy(generation_mode=mode))(
                    _case_runner(operation.label, cases, session)
                )
            )
            try:
                test()
            except hypothesis.errors.Unsatisfiable:
                # No parameter and no body (GET /health): nothing can be made invalid.
                assert mode is GenerationMode.NEGATIVE, operation.label
                assert not operation.body, operation.label
            # Check failures come as a FailureGroup (a BaseExceptionGroup, not an Exception).
            except (Exception, BaseExceptionGroup) as exc:  # all reported below
                failures.append(f"--- {operation.label} ({mode.value})\n{exc}")
    session.close()
    return cases, failures


@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("fast_processor")
@pytest.mark.parametrize(
    ("service", "prefix", "max_examples"),
    # max_examples per operation and generation mode; parameterless operations stop at one.
    # api-svc: 2 operations with parameters x 2 modes; processor-svc: 1 operation x 2 modes.
    [("api-svc", "/api", 260), ("processor-svc", "/processor", 520)],
)
def test_schemathesis_finds_no_5xx_and_every_response_conforms(
    stack: NativeStack, service: str, prefix: str, max_examples: int
) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}{prefix}/openapi.json")
    assert schema.get_base_url() == f"{stack.gateway_url}{prefix}"
    cases, failures = _fuzz(schema, max_examples)
    print(f"{service}: {sum(cases.values())} cases {dict(cases)}")  # shown with -s
    assert not failures, f"{service}: {len(failures)} failing operations\n" + "\n".join(failures)
    assert sum(cases.values()) >= MIN_CASES_PER_SERVICE, dict(cases)


@pytest.mark.parametrize("prefix", ["/api", "/processor"])
def test_the_openapi_documents_describe_the_error_envelope(stack: NativeStack, prefix: str) -> None:
    """Every documented 4xx/5xx answer is the envelope, so conformance checks what is sent.

    FastAPI documents 422 as its HTTPValidationError ({"detail": [...]}) on its own, which the
    services never send; against it response_schema_conformance passes vacuously (that schema
    requires nothing)."""
    document = requests.get(f"{stack.gateway_url}{prefix}/openapi.json", timeout=10).json()
    schemas = document["components"]["schemas"]
    problems = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, answer in operation["responses"].items():
                if not status.startswith(("4", "5")):  # 404, 4XX, 503, 5XX ...
                    continue
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {})
                name = str(ref.get("$ref", "")).rsplit("/", 1)[-1]
                schema = schemas.get(name, {})
                if "error" not in schema.get("required", []):
                    problems.append(f"{method.upper()} {path} {status}: {name or 'no schema'}")
    assert not problems, "\n".join(problems)
