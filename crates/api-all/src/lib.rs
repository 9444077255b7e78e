//! The whole agyn contract as data: the encoded descriptor set of every
//! proto file (for gRPC server reflection) and the table of gateway methods
//! (for routing methods whose service is not built yet).

/// `FileDescriptorSet` of every file under `proto/`, with source info.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agyn.fds.bin"));

include!(concat!(env!("OUT_DIR"), "/gateway_methods.rs"));

#[cfg(test)]
mod tests {
    use super::GATEWAY_METHODS;

    #[test]
    fn table_names_every_gateway() {
        let gateways = [
            "users",
            "organizations",
            "agents",
            "runners",
            "llm",
            "secrets",
            "chat",
            "threads",
            "files",
            "notifications",
            "tracing",
            "apps",
        ];
        for gateway in gateways {
            let prefix = format!("/agynio.api.{gateway}.v1.");
            assert!(
                GATEWAY_METHODS
                    .iter()
                    .any(|(path, ..)| path.starts_with(&prefix)),
                "no methods for {gateway}"
            );
        }
        assert!(GATEWAY_METHODS.contains(&(
            "/agynio.api.users.v1.UsersGateway/GetMe",
            false,
            false
        )));
    }
}
