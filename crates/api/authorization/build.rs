fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/authorization/v1/authorization.proto"], &[])
}
