fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(
        &[
            "agynio/api/tracing/v1/tracing.proto",
            "opentelemetry/proto/collector/trace/v1/trace_service.proto",
            "opentelemetry/proto/trace/v1/trace.proto",
            "opentelemetry/proto/common/v1/common.proto",
            "opentelemetry/proto/resource/v1/resource.proto",
        ],
        &[],
    )
}
