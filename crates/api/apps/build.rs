fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/apps/v1/apps.proto"], &[])
}
