fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/users/v1/users.proto"], &[])
}
