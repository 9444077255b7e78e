fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/organizations/v1/organizations.proto"], &[])
}
