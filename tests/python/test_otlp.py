"""OTLP ingest with the OpenTelemetry Python SDK's own exporters.

Spans are recorded in memory by the SDK, sent with the OTLP/gRPC and the
OTLP/HTTP (protobuf) span exporters to the public listener, and read back
with TracingGateway.GetTrace.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agyn_server import AgynServer
from connect_client import ConnectClient, ConnectError

TRACING = "agynio.api.tracing.v1.TracingGateway"
ORGANIZATIONS = "agynio.api.organizations.v1.OrganizationsGateway"
EXPORT_TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def organization_id(admin: ConnectClient) -> str:
    created = admin.call(f"{ORGANIZATIONS}/CreateOrganization", {"name": "OTLP tests"})
    return created["organization"]["meta"]["id"]


@pytest.fixture
def recorded(organization_id: str) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider whose ended spans stay in memory until exported by hand."""
    memory = InMemorySpanExporter()
    resource = Resource.create(
        {"service.name": "python-otlp-test", "agyn.organization.id": organization_id}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def record_run(provider: TracerProvider) -> int:
    """Record an invocation with an LLM call and a failed tool call, and return the trace id."""
    tracer = provider.get_tracer("agyn-python-tests")
    with tracer.start_as_current_span("invocation.message") as root:
        with tracer.start_as_current_span("llm.call") as llm:
            llm.set_attribute("gen_ai.usage.input_tokens", 11)
            llm.set_attribute("gen_ai.usage.output_tokens", 4)
        with tracer.start_as_current_span("tool.execution") as tool:
            tool.set_status(Status(StatusCode.ERROR, "exit code 2"))
    return root.get_span_context().trace_id


def get_trace(admin: ConnectClient, trace_id: int) -> dict:
    trace_bytes = trace_id.to_bytes(16, "big")
    return admin.call(f"{TRACING}/GetTrace", {"traceId": base64.b64encode(trace_bytes).decode()})


def stored_spans(response: dict) -> dict[str, dict]:
    """Index the spans of a GetTrace response by name."""
    spans = {}
    for resource_spans in response["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                spans[span["name"]] = span
    return spans


def export_with(exporter: SpanExporter, memory: InMemorySpanExporter) -> None:
    result = exporter.export(memory.get_finished_spans())
    exporter.shutdown()
    assert result == SpanExportResult.SUCCESS


def check_stored_run(admin: ConnectClient, trace_id: int) -> None:
    response = get_trace(admin, trace_id)
    spans = stored_spans(response)
    assert sorted(spans) == ["invocation.message", "llm.call", "tool.execution"]
    root_id = spans["invocation.message"]["spanId"]
    assert spans["llm.call"]["parentSpanId"] == root_id
    assert spans["tool.execution"]["status"]["message"] == "exit code 2"
    summary = response["summary"]
    assert summary["totalSpans"] == "3"
    assert summary["status"] == "TRACE_STATUS_ERROR"
    assert summary["tokenUsage"]["inputTokens"] == "11"
    assert summary["tokenUsage"]["totalTokens"] == "15"
    attributes = {
        attribute["key"]: attribute["value"]
        for attribute in response["resourceSpans"][0]["resource"]["attributes"]
    }
    assert attributes["service.name"] == {"stringValue": "python-otlp-test"}


def test_grpc_exporter(
    server: AgynServer,
    admin: ConnectClient,
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    trace_id = record_run(provider)
    exporter = GrpcSpanExporter(
        endpoint=f"127.0.0.1:{server.port}",
        insecure=True,
        headers=(("authorization", f"Bearer {server.admin_token}"),),
        timeout=EXPORT_TIMEOUT_SECONDS,
    )
    export_with(exporter, memory)
    check_stored_run(admin, trace_id)


def test_http_exporter(
    server: AgynServer,
    admin: ConnectClient,
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    trace_id = record_run(provider)
    exporter = HttpSpanExporter(
        endpoint=f"{server.origin}/v1/traces",
        headers={"authorization": f"Bearer {server.admin_token}"},
        timeout=EXPORT_TIMEOUT_SECONDS,
    )
    export_with(exporter, memory)
    check_stored_run(admin, trace_id)


def test_http_exporter_without_token_fails(
    server: AgynServer,
    admin: ConnectClient,
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    trace_id = record_run(provider)
    exporter = HttpSpanExporter(
        endpoint=f"{server.origin}/v1/traces", timeout=EXPORT_TIMEOUT_SECONDS
    )
    result = exporter.export(memory.get_finished_spans())
    exporter.shutdown()
    assert result == SpanExportResult.FAILURE
    with pytest.raises(ConnectError) as failure:
        get_trace(admin, trace_id)
    assert failure.value.code == "not_found"
