fn main() -> Result<(), Box<dyn std::error::Error>> {
    agyn_api_build::compile(&["agynio/api/notifications/v1/notifications.proto"], &[])
}
