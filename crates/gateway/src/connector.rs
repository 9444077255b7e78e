//! [`PlatformConnector`]: how the platform reaches a runner.
//!
//! A built-in runner hosted by this process is called in process. Any
//! other runner is called over gRPC with mutual TLS at its enrolled
//! endpoint, presenting the `runners` component certificate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agyn_core::{Error, Result};
use agyn_runner::{RemoteRunner, Runner};
use agyn_runners::{RunnerConnector, RunnerRecord};

/// The client credential presented to remote runners.
struct ClientIdentity {
    certificate_pem: String,
    key_pem: agyn_core::Secret<String>,
    ca_pem: String,
}

/// Runners reachable from this process. Cheap to clone; clones share
/// their state.
#[derive(Clone, Default)]
pub struct PlatformConnector {
    inner: Arc<Inner>,
}

/// A remote runner's client, with the endpoint it was built for.
type RemoteClient = (String, Arc<dyn Runner>);

#[derive(Default)]
struct Inner {
    local: RwLock<HashMap<String, Arc<dyn Runner>>>,
    identity: RwLock<Option<ClientIdentity>>,
    /// Clients of remote runners by runner id, with the endpoint each was
    /// built for, so a re-enrolled runner at a new address gets a new one.
    remote: RwLock<HashMap<String, RemoteClient>>,
}

impl PlatformConnector {
    /// Routes calls for runner `runner_id` to `runner` in this process.
    pub fn add_local(&self, runner_id: &str, runner: Arc<dyn Runner>) {
        write(&self.inner.local).insert(runner_id.to_string(), runner);
    }

    /// Sets the certificate (leaf first), key and CA used to dial remote
    /// runners.
    pub fn set_client_identity(&self, certificate_pem: String, key_pem: String, ca_pem: String) {
        *write(&self.inner.identity) = Some(ClientIdentity {
            certificate_pem,
            key_pem: agyn_core::Secret::new(key_pem),
            ca_pem,
        });
        write(&self.inner.remote).clear();
    }
}

impl RunnerConnector for PlatformConnector {
    fn connect(&self, runner: &RunnerRecord) -> Result<Arc<dyn Runner>> {
        if let Some(local) = read(&self.inner.local).get(&runner.id) {
            return Ok(Arc::clone(local));
        }
        if runner.endpoint.is_empty() {
            // NOTE: a built-in runner of another replica has no endpoint
            // yet, so only the replica hosting it reaches it.
            return Err(Error::unavailable(format!(
                "runner {} is built into another replica and has no endpoint",
                runner.id
            )));
        }
        if let Some((endpoint, client)) = read(&self.inner.remote).get(&runner.id)
            && *endpoint == runner.endpoint
        {
            return Ok(Arc::clone(client));
        }
        let identity = read(&self.inner.identity);
        let Some(identity) = identity.as_ref() else {
            return Err(Error::unavailable(
                "no client certificate for dialing runners is configured on this replica",
            ));
        };
        let client: Arc<dyn Runner> = Arc::new(RemoteRunner::new(
            &runner.endpoint,
            &runner.id,
            &identity.certificate_pem,
            identity.key_pem.expose(),
            &identity.ca_pem,
        )?);
        write(&self.inner.remote).insert(
            runner.id.clone(),
            (runner.endpoint.clone(), Arc::clone(&client)),
        );
        Ok(client)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
