fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/llm/v1/llm.proto"], &[])
}
