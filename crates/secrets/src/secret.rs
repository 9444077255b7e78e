//! Secret operations. Each states its authorization rule first.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result, Secret};
use agyn_store::sqlx::AnyConnection;

use crate::keys::{self, CreateKey};
use crate::model::{NewSecret, RemoteRef, SecretChanges, SecretRecord, Source, Storage};
use crate::references::{Referrer, check_failed, referenced};
use crate::store::{self, SECRETS, SourceWrite, providers, secrets};
use crate::validate::SECRET_VALUE_MAX_BYTES;
use crate::{
    Secrets, WRITE_ATTEMPTS, commit, is_write_race, name_taken, no_fields, seal, validate,
    write_conflict,
};

const CREATE_SCOPE: &str = "secrets.CreateSecret";

enum Created {
    New(SecretRecord),
    Replayed(String),
}

/// A validated source: the value to seal or the canonical reference.
pub(crate) enum CheckedSource<'a> {
    Value(&'a Secret<String>),
    Remote(RemoteRef),
}

impl<'a> CheckedSource<'a> {
    /// Validates a create request's source. `max_bytes` limits a value.
    pub(crate) fn check(source: Option<&'a Source>, max_bytes: usize) -> Result<Self> {
        match source {
            None => Err(Error::invalid_field(
                "source",
                "set exactly one of value and remote",
            )),
            Some(Source::Value(value)) => {
                validate::value(value, max_bytes)?;
                Ok(Self::Value(value))
            }
            Some(Source::Remote(remote)) => Ok(Self::Remote(validate::remote(remote)?)),
        }
    }

    /// Validates an update request's `value` and `remote`, at most one of
    /// which may be set.
    pub(crate) fn check_update(
        value: Option<&'a Secret<String>>,
        remote: Option<&'a RemoteRef>,
        max_bytes: usize,
    ) -> Result<Option<Self>> {
        match (value, remote) {
            (Some(_), Some(_)) => Err(Error::invalid_field(
                "remote",
                "must not be set together with value; set at most one of them",
            )),
            (Some(value), None) => {
                validate::value(value, max_bytes)?;
                Ok(Some(Self::Value(value)))
            }
            (None, Some(remote)) => Ok(Some(Self::Remote(validate::remote(remote)?))),
            (None, None) => Ok(None),
        }
    }

    /// Returns the public parts of the source for a request fingerprint.
    pub(crate) fn fingerprint_parts(&self) -> Vec<&str> {
        match self {
            Self::Value(_) => vec!["local"],
            Self::Remote(remote) => vec!["remote", &remote.secret_provider_id, &remote.remote_name],
        }
    }

    pub(crate) fn value(&self) -> Option<&'a Secret<String>> {
        match self {
            Self::Value(value) => Some(value),
            Self::Remote(_) => None,
        }
    }

    pub(crate) fn storage(&self) -> Storage {
        match self {
            Self::Value(_) => Storage::Local,
            Self::Remote(remote) => Storage::Remote(remote.clone()),
        }
    }
}

/// Checks, inside a write transaction, that a remote source names a
/// provider of `org_id`.
pub(crate) async fn ensure_provider_in_org(
    connection: &mut AnyConnection,
    source: &CheckedSource<'_>,
    org_id: &str,
) -> Result<()> {
    let CheckedSource::Remote(remote) = source else {
        return Ok(());
    };
    let provider_org = providers::organization_of(connection, &remote.secret_provider_id).await?;
    if provider_org.as_deref() != Some(org_id) {
        return Err(Error::invalid_field(
            "remote.secret_provider_id",
            "secret provider not found in organization",
        ));
    }
    Ok(())
}

impl Secrets {
    /// CreateSecret: `can_manage` on the organization, which must be
    /// active. A remote secret's provider must belong to the same
    /// organization and is not contacted. A repeat with the same
    /// `request_id` returns the first secret.
    pub async fn create_secret(&self, caller: &Caller, input: &NewSecret) -> Result<SecretRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let name = validate::secret_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let source = CheckedSource::check(input.source.as_ref(), SECRET_VALUE_MAX_BYTES)?;
        keys::validate(&input.request_id)?;
        self.authorize_write(caller_id, &org_id).await?;

        let mut parts = vec![org_id.as_str(), name, description];
        parts.extend(source.fingerprint_parts());
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &parts,
            source.value(),
        );
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let created = async {
                if let Some(id) = key.replayed(&mut tx, &self.key).await? {
                    return Ok(Created::Replayed(id));
                }
                if secrets::name_taken(&mut tx, &org_id, name, "").await? {
                    return Err(name_taken("secret", name, &org_id));
                }
                ensure_provider_in_org(&mut tx, &source, &org_id).await?;
                let now = now_micros();
                let record = SecretRecord {
                    id: new_id(),
                    organization_id: org_id.clone(),
                    name: name.to_string(),
                    description: description.to_string(),
                    storage: source.storage(),
                    created_at: now,
                    updated_at: now,
                };
                let sealed_value = source
                    .value()
                    .map(|value| seal::SECRET_VALUE.seal(&self.key, &record.id, value));
                secrets::insert(&mut tx, &record, sealed_value.as_deref()).await?;
                key.record(&mut tx, &self.key, &record.id).await?;
                Ok(Created::New(record))
            }
            .await;
            let created = match created {
                Ok(created) => created,
                Err(error) if is_write_race(&error) => continue,
                Err(error) => return Err(error),
            };
            if !commit(tx).await? {
                continue;
            }
            return match created {
                Created::Replayed(id) => self.secret_or_not_found(&id).await,
                Created::New(record) => {
                    tracing::info!(
                        secret_id = %record.id,
                        organization_id = %record.organization_id,
                        storage = store::storage_name(&record.storage),
                        "Secret created"
                    );
                    Ok(record)
                }
            };
        }
        Err(write_conflict())
    }

    /// GetSecret: `can_read` on the secret's organization.
    pub async fn get_secret(&self, caller: &Caller, id: &str) -> Result<SecretRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let record = self.secret_or_not_found(&id).await?;
        self.authorize_read(caller_id, &record.organization_id)
            .await?;
        Ok(record)
    }

    /// ListSecrets: `can_read` on the organization. Ordered by
    /// `(created_at, id)`. With `secret_provider_id`, only the remote
    /// secrets of that provider.
    pub async fn list_secrets(
        &self,
        caller: &Caller,
        organization_id: &str,
        secret_provider_id: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<SecretRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let provider_id = secret_provider_id
            .map(|id| parse_id("secret_provider_id", id))
            .transpose()?;
        let fingerprint = Fingerprint::new("agynio.api.secrets.v1.ListSecrets")
            .with(caller_id)
            .with(&org_id)
            .with(provider_id.as_deref().unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.authorize_list(caller_id, &org_id).await?;
        let mut connection = self.db.pool().acquire().await?;
        secrets::list(&mut connection, &org_id, provider_id.as_deref(), &page).await
    }

    /// UpdateSecret: `can_manage` on the secret's organization, which must
    /// be active. `value` makes the secret LOCAL and clears its reference,
    /// and `remote` makes it REMOTE and deletes the stored value.
    pub async fn update_secret(
        &self,
        caller: &Caller,
        id: &str,
        changes: &SecretChanges,
    ) -> Result<SecretRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.name.is_none()
            && changes.description.is_none()
            && changes.value.is_none()
            && changes.remote.is_none()
        {
            return Err(no_fields());
        }
        let name = changes
            .name
            .as_deref()
            .map(validate::secret_name)
            .transpose()?;
        let description = changes
            .description
            .as_deref()
            .map(validate::description)
            .transpose()?;
        let source = CheckedSource::check_update(
            changes.value.as_ref(),
            changes.remote.as_ref(),
            SECRET_VALUE_MAX_BYTES,
        )?;
        let current = self.secret_or_not_found(&id).await?;
        self.authorize_write(caller_id, &current.organization_id)
            .await?;

        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            let updated = async {
                let mut record = secrets::by_id(&mut tx, &id)
                    .await?
                    .ok_or_else(|| Error::not_found("secret", &id))?;
                if let Some(name) = name {
                    if secrets::name_taken(&mut tx, &record.organization_id, name, &id).await? {
                        return Err(name_taken("secret", name, &record.organization_id));
                    }
                    record.name = name.to_string();
                }
                if let Some(description) = description {
                    record.description = description.to_string();
                }
                let sealed_value;
                let write = match &source {
                    None => SourceWrite::Keep,
                    Some(source) => {
                        ensure_provider_in_org(&mut tx, source, &record.organization_id).await?;
                        record.storage = source.storage();
                        match source {
                            CheckedSource::Value(value) => {
                                sealed_value = seal::SECRET_VALUE.seal(&self.key, &id, value);
                                SourceWrite::Local(&sealed_value)
                            }
                            CheckedSource::Remote(remote) => SourceWrite::Remote(remote),
                        }
                    }
                };
                record.updated_at = now_micros().max(record.updated_at);
                secrets::update(&mut tx, &record, write).await?;
                Ok(record)
            }
            .await;
            let record = match updated {
                Ok(record) => record,
                Err(error) if is_write_race(&error) => continue,
                Err(error) => return Err(error),
            };
            if !commit(tx).await? {
                continue;
            }
            tracing::info!(
                secret_id = %record.id,
                organization_id = %record.organization_id,
                storage = store::storage_name(&record.storage),
                "Secret updated"
            );
            return Ok(record);
        }
        Err(write_conflict())
    }

    /// DeleteSecret: `can_manage` on the secret's organization, which must
    /// be active. Fails with `failed_precondition` (reason `REFERENCED`)
    /// while agent environment variables read it, and with `unavailable`
    /// when they cannot be checked.
    pub async fn delete_secret(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let current = self.secret_or_not_found(&id).await?;
        self.authorize_write(caller_id, &current.organization_id)
            .await?;
        if let Some(references) = &self.references {
            let envs = references
                .secret_references(&id)
                .await
                .map_err(|error| check_failed("secret", &id, &error))?;
            if !envs.is_empty() {
                let referrers: Vec<Referrer> = envs
                    .into_iter()
                    .map(|env_id| Referrer {
                        kind: "env",
                        id: env_id,
                    })
                    .collect();
                return Err(referenced("secret", &referrers));
            }
        }
        let mut tx = self.db.begin_write().await?;
        let existed = SECRETS.delete(&mut tx, &id).await?;
        tx.commit().await?;
        if !existed {
            return Err(Error::not_found("secret", &id));
        }
        tracing::info!(
            secret_id = %id,
            organization_id = %current.organization_id,
            "Secret deleted"
        );
        Ok(())
    }

    pub(crate) async fn secret_or_not_found(&self, id: &str) -> Result<SecretRecord> {
        let mut connection = self.db.pool().acquire().await?;
        secrets::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("secret", id))
    }
}
