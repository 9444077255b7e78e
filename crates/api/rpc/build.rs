fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["google/rpc/error_details.proto"], &[])
}
