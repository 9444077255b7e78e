use agyn_api_build::Dependency;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(
        &["agynio/api/threads/v1/threads.proto"],
        &[Dependency {
            package: "agynio.api.identity.v1",
            crate_name: "agyn_api_identity",
        }],
    )
}
