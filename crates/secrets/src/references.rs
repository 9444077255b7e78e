//! Delete guards: what references a secret provider, a secret or an image
//! pull secret, and the error that names the referrers.

use std::future::Future;
use std::pin::Pin;

use agyn_core::{Error, Result};

/// Maximum number of referrers listed by id in a delete guard's message.
/// The rest are counted.
const MAX_LISTED_REFERRERS: usize = 50;

/// References held by other services: agent environment variables that
/// read a secret and image pull secret attachments of agents. The agents
/// service implements it, and an error makes the delete fail with
/// `unavailable`.
pub trait SecretReferences: Send + Sync {
    /// Returns the ids of the agent environment variables that read the
    /// secret `secret_id`.
    fn secret_references<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>>> + Send + 'a>>;

    /// Returns the ids of the image pull secret attachments of
    /// `image_pull_secret_id`.
    fn image_pull_secret_references<'a>(
        &'a self,
        image_pull_secret_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>>> + Send + 'a>>;
}

/// One resource that blocks a delete: its kind (`secret`, `env`, ...) and
/// id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Referrer {
    pub kind: &'static str,
    pub id: String,
}

/// Builds the `failed_precondition` error (reason `REFERENCED`) of a
/// delete blocked by `referrers`, such as `secret is referenced by env
/// <id>, env <id>`. At most 50 referrers are listed by id.
pub(crate) fn referenced(resource: &str, referrers: &[Referrer]) -> Error {
    let mut listed: Vec<String> = referrers
        .iter()
        .take(MAX_LISTED_REFERRERS)
        .map(|referrer| format!("{} {}", referrer.kind, referrer.id))
        .collect();
    if referrers.len() > MAX_LISTED_REFERRERS {
        listed.push(format!(
            "and {} more",
            referrers.len() - MAX_LISTED_REFERRERS
        ));
    }
    Error::failed_precondition(format!(
        "{resource} is referenced by {}; remove the references first",
        listed.join(", ")
    ))
    .with_reason("REFERENCED")
}

/// Builds the `unavailable` error of a reference check that failed.
pub(crate) fn check_failed(resource: &str, id: &str, error: &Error) -> Error {
    Error::unavailable(format!(
        "failed to check the references to {resource} {id}: {}; retry later",
        error.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_each_referrer() {
        let referrers = vec![
            Referrer {
                kind: "secret",
                id: "a".into(),
            },
            Referrer {
                kind: "image pull secret",
                id: "b".into(),
            },
        ];
        let error = referenced("secret provider", &referrers);
        assert_eq!(
            error.message(),
            "secret provider is referenced by secret a, image pull secret b; remove the references first"
        );
        assert_eq!(error.reason(), Some("REFERENCED"));
    }

    #[test]
    fn long_lists_are_cut() {
        let referrers: Vec<Referrer> = (0..53)
            .map(|index| Referrer {
                kind: "env",
                id: index.to_string(),
            })
            .collect();
        let message = referenced("secret", &referrers).message().to_string();
        assert!(message.contains("env 49, and 3 more;"), "{message}");
        assert!(!message.contains("env 50"), "{message}");
    }
}
