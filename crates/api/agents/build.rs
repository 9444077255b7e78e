use agyn_api_build::Dependency;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(
        &["agynio/api/agents/v1/agents.proto"],
        &[Dependency {
            package: "agynio.api.identity.v1",
            crate_name: "agyn_api_identity",
        }],
    )
}
