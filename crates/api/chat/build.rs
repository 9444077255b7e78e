use agyn_api_build::Dependency;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(
        &["agynio/api/chat/v1/chat.proto"],
        &[Dependency {
            package: "agynio.api.identity.v1",
            crate_name: "agyn_api_identity",
        }],
    )
}
