//! EnrollApp: an app exchanges its service token for a client certificate.

use agyn_core::{Error, Result, Secret};
use agyn_pki::{CertificateKind, KeySource, Subject};
use agyn_users::tokens;

use crate::model::Enrolled;
use crate::{Apps, store};

fn invalid_token() -> Error {
    Error::unauthenticated("invalid service token")
}

impl Apps {
    /// EnrollApp: no caller identity, only the service token, and at most
    /// 10 calls per minute from `client_address`. Revokes the app's earlier
    /// certificates and issues a new one in one transaction. The token
    /// stays valid.
    pub async fn enroll_app(
        &self,
        client_address: &str,
        service_token: &Secret<String>,
        csr_pem: Option<&str>,
    ) -> Result<Enrolled> {
        if let Err(retry_after) = self.enroll_limiter.check(client_address) {
            return Err(Error::resource_exhausted(format!(
                "too many enrollment attempts from {client_address}; retry in {retry_after} s"
            )));
        }
        let service_token = service_token.expose();
        if !tokens::looks_like_service_token(service_token) {
            return Err(invalid_token());
        }
        let hash = tokens::hash(service_token);

        let mut tx = self.db.begin_write().await?;
        let Some((app, stored_hash)) =
            store::lock_app_by_token_hash(&mut tx, self.db.backend(), &hash).await?
        else {
            return Err(invalid_token());
        };
        if !tokens::hashes_equal(&stored_hash, &hash) {
            return Err(invalid_token());
        }
        let key = match csr_pem {
            Some(csr) => KeySource::Csr(csr),
            None => KeySource::Generate,
        };
        let revoked = self
            .pki
            .revoke_subject_in(&mut tx, CertificateKind::App, &app.id)
            .await?;
        let subject = Subject::App {
            app_identity_id: app.id.clone(),
        };
        let issued = self.pki.issue_in(&mut tx, &subject, key).await?;
        tx.commit().await?;
        tracing::info!(
            app_id = %app.id,
            client = client_address,
            serial = %issued.serial,
            revoked,
            "App enrolled"
        );

        Ok(Enrolled {
            identity_json: issued.identity_json(&app.id),
            identity_id: app.id,
        })
    }
}
