fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile_catalog("agyn.fds.bin")
}
