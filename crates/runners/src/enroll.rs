//! EnrollRunner: a runner exchanges its service token for a certificate.

use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use agyn_pki::{CertificateKind, KeySource, Subject};

use crate::model::{Enrolled, Enrollment, RunnerStatus};
use crate::store::runners;
use crate::{Runners, token, validate};

fn invalid_token() -> Error {
    Error::unauthenticated("invalid service token")
}

impl Runners {
    /// EnrollRunner: no caller identity, only the service token, and at
    /// most 10 calls per minute from `client_address`. Revokes the
    /// runner's earlier certificates, issues a new one, stores the endpoint
    /// and sets ENROLLED, in one transaction. The token stays valid.
    pub async fn enroll_runner(
        &self,
        client_address: &str,
        enrollment: &Enrollment<'_>,
    ) -> Result<Enrolled> {
        if let Err(retry_after) = self.enroll_limiter.check(client_address) {
            return Err(Error::resource_exhausted(format!(
                "too many enrollment attempts from {client_address}; retry in {retry_after} s"
            )));
        }
        let service_token = enrollment.service_token.expose();
        if !token::looks_like_service_token(service_token) {
            return Err(invalid_token());
        }
        let hash = token::token_hash(service_token);

        let mut tx = self.db.begin_write().await?;
        let Some((mut record, stored_hash)) =
            runners::lock_by_token_hash(&mut tx, self.db.backend(), &hash).await?
        else {
            return Err(invalid_token());
        };
        if !token::hashes_equal(&stored_hash, &hash) {
            return Err(invalid_token());
        }
        if !enrollment.endpoint.is_empty() || !record.builtin {
            if enrollment.endpoint.is_empty() {
                return Err(Error::invalid_field(
                    "endpoint",
                    "is required unless the runner is built in",
                ));
            }
            validate::endpoint("endpoint", enrollment.endpoint)?;
        }
        let key = match enrollment.csr_pem {
            Some(csr) => KeySource::Csr(csr),
            None => KeySource::Generate,
        };
        let revoked = self
            .pki
            .revoke_subject_in(&mut tx, CertificateKind::Runner, &record.id)
            .await?;
        let subject = Subject::Runner {
            runner_id: record.id.clone(),
        };
        let issued = self.pki.issue_in(&mut tx, &subject, key).await?;
        let now = now_micros();
        record.endpoint = enrollment.endpoint.to_string();
        record.status = RunnerStatus::Enrolled;
        record.enrolled_at = Some(now);
        record.updated_at = now.max(record.updated_at);
        runners::update(&mut tx, &record).await?;
        tx.commit().await?;
        tracing::info!(
            runner_id = %record.id,
            client = client_address,
            serial = %issued.serial,
            revoked,
            "Runner enrolled"
        );

        Ok(Enrolled {
            identity_json: issued.identity_json(&record.id),
            service_name: record.service_name(),
            identity_id: record.id,
        })
    }
}
