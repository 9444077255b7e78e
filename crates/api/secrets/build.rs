fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/secrets/v1/secrets.proto"], &[])
}
