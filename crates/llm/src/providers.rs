//! Provider operations, independent of the RPC layer. Each operation
//! states its authorization rule first.
//!
//! A networked provider has an endpoint and a credential: a token for
//! `AUTH_METHOD_BEARER` and `AUTH_METHOD_X_API_KEY`, or 1 to 32 custom
//! headers for `AUTH_METHOD_CUSTOM_HEADERS`. A scripted provider has a
//! script instead, with no endpoint, no credential and
//! `AUTH_METHOD_UNSPECIFIED`. A provider never changes between the two.

use std::collections::BTreeMap;

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol, Script};
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::text::display_name;
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};
use agyn_pki::MasterKey;

use crate::store::{self, ProviderRecord, StoredProvider};
use crate::validate::{self, PROVIDER_NAME_MAX_CHARS, auth_method_name};
use crate::{Llm, WRITE_ATTEMPTS, keys, org_object, sealing, write_conflict};

const CREATE_SCOPE: &str = "llm.CreateProvider";
/// Model ids named in the error of a blocked DeleteProvider.
const LISTED_REFERENCES: i64 = 10;

/// Request of CreateProvider. `token` and the header values are secrets:
/// this type has no `Debug` so that they cannot be logged by accident.
#[derive(Clone, Copy, Default)]
pub struct NewProvider<'a> {
    pub organization_id: &'a str,
    pub name: &'a str,
    pub endpoint: &'a str,
    pub protocol: Protocol,
    pub auth_method: AuthMethod,
    pub token: &'a str,
    pub headers: &'a [(String, String)],
    pub script: Option<&'a Script>,
    pub request_id: &'a str,
}

/// Request of UpdateProvider: `None` leaves a field unchanged. Like
/// [`NewProvider`], it has no `Debug`.
#[derive(Clone, Copy, Default)]
pub struct ProviderUpdate<'a> {
    pub name: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub protocol: Option<Protocol>,
    pub auth_method: Option<AuthMethod>,
    pub token: Option<&'a str>,
    /// Replaces the whole header map.
    pub headers: Option<&'a [(String, String)]>,
    pub script: Option<&'a Script>,
}

impl ProviderUpdate<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.endpoint.is_none()
            && self.protocol.is_none()
            && self.auth_method.is_none()
            && self.token.is_none()
            && self.headers.is_none()
            && self.script.is_none()
    }
}

impl Llm {
    /// CreateProvider: `can_manage` on the organization, which must be
    /// active. A repeat with the same `request_id` returns the provider
    /// that the first call created.
    pub async fn create_provider(
        &self,
        caller: &Caller,
        input: &NewProvider<'_>,
    ) -> Result<ProviderRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", input.organization_id)?;
        let name = display_name("name", input.name, PROVIDER_NAME_MAX_CHARS)?;
        let protocol = match input.protocol {
            Protocol::PROTOCOL_UNSPECIFIED => Protocol::PROTOCOL_RESPONSES,
            protocol => protocol,
        };
        let (endpoint, plan) = match input.script {
            Some(script) => {
                ensure_scripted_fields_empty(
                    Some(input.endpoint),
                    Some(input.auth_method),
                    Some(input.token),
                    Some(input.headers),
                )?;
                agyn_scripted::validate(script)?;
                ("", CredentialPlan::NONE)
            }
            None => {
                let endpoint = validate::endpoint(input.endpoint)?;
                let method = match input.auth_method {
                    AuthMethod::AUTH_METHOD_UNSPECIFIED => AuthMethod::AUTH_METHOD_BEARER,
                    method => method,
                };
                let plan = networked_plan(method, Some(input.token), Some(input.headers), None)?;
                (endpoint, plan)
            }
        };
        keys::validate(input.request_id)?;
        self.ensure_organization_active(&org_id).await?;
        self.require(caller_id, "can_manage", &org_object(&org_id))
            .await?;

        let fingerprint = create_fingerprint(&org_id, name, endpoint, protocol, input);
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) = keys::replayed(
                &mut tx,
                CREATE_SCOPE,
                caller_id,
                input.request_id,
                &fingerprint,
            )
            .await?
            {
                tx.commit().await?;
                return self.provider_or_not_found(&id).await;
            }
            if store::provider_name_taken(&mut tx, &org_id, name, "").await? {
                return Err(name_taken(name));
            }
            let now = now_micros();
            let mut provider = StoredProvider {
                record: ProviderRecord {
                    id: new_id(),
                    organization_id: org_id.clone(),
                    name: name.to_string(),
                    endpoint: endpoint.to_string(),
                    protocol,
                    auth_method: AuthMethod::AUTH_METHOD_UNSPECIFIED,
                    header_names: Vec::new(),
                    has_token: false,
                    script: input.script.cloned(),
                    created_at: now,
                    updated_at: now,
                },
                sealed_token: None,
                sealed_headers: None,
            };
            plan.apply(&self.key, &mut provider);
            let inserted = async {
                store::insert_provider(&mut tx, &provider).await?;
                keys::record(
                    &mut tx,
                    CREATE_SCOPE,
                    caller_id,
                    input.request_id,
                    &fingerprint,
                    &provider.record.id,
                )
                .await
            }
            .await;
            match inserted {
                Ok(()) => {}
                // A concurrent call took the name or the key first: start
                // over, and the checks above report what it created.
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                provider_id = %provider.record.id,
                organization_id = %org_id,
                auth_method = auth_method_name(provider.record.auth_method),
                scripted = provider.record.is_scripted(),
                "Provider created"
            );
            return Ok(provider.record);
        }
        Err(write_conflict())
    }

    /// GetProvider: `can_read` on the provider's organization.
    pub async fn get_provider(&self, caller: &Caller, id: &str) -> Result<ProviderRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let provider = self.provider_or_not_found(&id).await?;
        self.require(
            caller_id,
            "can_read",
            &org_object(&provider.organization_id),
        )
        .await?;
        Ok(provider)
    }

    /// ListProviders: `can_read` on the organization. Ordered by
    /// `(created_at, id)`.
    pub async fn list_providers(
        &self,
        caller: &Caller,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ProviderRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.llm.v1.ListProviders")
            .with(caller_id)
            .with(&org_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.require(caller_id, "can_read", &org_object(&org_id))
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        store::list_providers(&mut connection, &org_id, &page).await
    }

    /// UpdateProvider: `can_manage` on the provider's organization, which
    /// must be active. The credential rules apply to the resulting state:
    /// an absent token keeps the stored one, switching to custom headers
    /// clears the token, and switching away clears the headers and needs a
    /// token, supplied now or already stored.
    pub async fn update_provider(
        &self,
        caller: &Caller,
        id: &str,
        update: &ProviderUpdate<'_>,
    ) -> Result<ProviderRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if update.is_empty() {
            return Err(Error::invalid_argument("no fields to update"));
        }
        let name = update
            .name
            .map(|name| display_name("name", name, PROVIDER_NAME_MAX_CHARS))
            .transpose()?;
        if update.protocol == Some(Protocol::PROTOCOL_UNSPECIFIED) {
            return Err(Error::invalid_field(
                "protocol",
                "must not be PROTOCOL_UNSPECIFIED",
            ));
        }
        if let Some(script) = update.script {
            agyn_scripted::validate(script)?;
        }
        let current = self.provider_or_not_found(&id).await?;
        self.require(
            caller_id,
            "can_manage",
            &org_object(&current.organization_id),
        )
        .await?;
        self.ensure_organization_active(&current.organization_id)
            .await?;

        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            store::lock_provider(&mut tx, self.db.backend(), &id).await?;
            let stored = store::provider_by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("provider", &id))?;
            let mut next = stored.clone();
            apply_update(&self.key, &mut next, update)?;
            if let Some(name) = name
                && name != stored.record.name
            {
                if store::provider_name_taken(&mut tx, &stored.record.organization_id, name, &id)
                    .await?
                {
                    return Err(name_taken(name));
                }
                next.record.name = name.to_string();
            }
            next.record.updated_at = now_micros().max(stored.record.updated_at);
            match store::update_provider(&mut tx, &next).await {
                Ok(()) => {}
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                provider_id = %id,
                organization_id = %next.record.organization_id,
                auth_method = auth_method_name(next.record.auth_method),
                "Provider updated"
            );
            return Ok(next.record);
        }
        Err(write_conflict())
    }

    /// DeleteProvider: `can_manage` on the provider's organization, which
    /// must be active. Fails with `failed_precondition` (reason
    /// `REFERENCED`) while models use the provider.
    pub async fn delete_provider(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let current = self.provider_or_not_found(&id).await?;
        self.require(
            caller_id,
            "can_manage",
            &org_object(&current.organization_id),
        )
        .await?;
        self.ensure_organization_active(&current.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        store::lock_provider(&mut tx, self.db.backend(), &id).await?;
        if store::provider_by_id(&mut tx, &id).await?.is_none() {
            return Err(Error::not_found("provider", &id));
        }
        let references = store::count_models_of_provider(&mut tx, &id).await?;
        if references > 0 {
            let listed = store::model_ids_of_provider(&mut tx, &id, LISTED_REFERENCES).await?;
            return Err(referenced(&listed, references));
        }
        store::delete_provider(&mut tx, &id).await?;
        tx.commit().await?;
        tracing::info!(
            provider_id = %id,
            organization_id = %current.organization_id,
            "Provider deleted"
        );
        Ok(())
    }

    /// Loads a provider, or `not_found`.
    pub(crate) async fn provider_or_not_found(&self, id: &str) -> Result<ProviderRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::provider_by_id(&mut connection, id)
            .await?
            .map(|provider| provider.record)
            .ok_or_else(|| Error::not_found("provider", id))
    }
}

/// A token or header map in the resulting state of a write.
enum Change<T> {
    /// None is stored.
    Cleared,
    /// The stored value stays.
    Kept,
    /// A new value replaces the stored one.
    Replaced(T),
}

/// The credential of a provider after a write, before sealing.
struct CredentialPlan<'a> {
    auth_method: AuthMethod,
    token: Change<&'a str>,
    headers: Change<BTreeMap<String, String>>,
}

impl CredentialPlan<'_> {
    /// The credential of a scripted provider: none.
    const NONE: Self = Self {
        auth_method: AuthMethod::AUTH_METHOD_UNSPECIFIED,
        token: Change::Cleared,
        headers: Change::Cleared,
    };

    /// Writes the plan into the provider row, sealing new values for its id.
    fn apply(&self, key: &MasterKey, provider: &mut StoredProvider) {
        let id = provider.record.id.clone();
        provider.record.auth_method = self.auth_method;
        match &self.token {
            Change::Cleared => provider.sealed_token = None,
            Change::Kept => {}
            Change::Replaced(token) => {
                provider.sealed_token = Some(sealing::seal_token(key, &id, token));
            }
        }
        match &self.headers {
            Change::Cleared => {
                provider.record.header_names.clear();
                provider.sealed_headers = None;
            }
            Change::Kept => {}
            Change::Replaced(headers) => {
                provider.record.header_names = headers.keys().cloned().collect();
                provider.sealed_headers = Some(sealing::seal_headers(key, &id, headers));
            }
        }
        provider.record.has_token = provider.sealed_token.is_some();
    }
}

/// Returns the credential of a networked provider after a write. `token`
/// and `headers` are the request's, `None` when absent. `stored` is the
/// provider's current auth method and whether it stores a token, `None` on
/// create.
fn networked_plan<'a>(
    auth_method: AuthMethod,
    token: Option<&'a str>,
    headers: Option<&[(String, String)]>,
    stored: Option<(AuthMethod, bool)>,
) -> Result<CredentialPlan<'a>> {
    match auth_method {
        AuthMethod::AUTH_METHOD_CUSTOM_HEADERS => {
            // A supplied token is rejected rather than silently dropped.
            if token.is_some_and(|token| !token.is_empty()) {
                return Err(Error::invalid_field(
                    "token",
                    "must be empty for AUTH_METHOD_CUSTOM_HEADERS",
                ));
            }
            let headers = match headers {
                Some(entries) => Change::Replaced(validate::headers(entries)?),
                None if stored.is_some_and(|(method, _)| method == auth_method) => Change::Kept,
                None => {
                    return Err(Error::invalid_field(
                        "headers",
                        "at least one header is required for AUTH_METHOD_CUSTOM_HEADERS",
                    ));
                }
            };
            Ok(CredentialPlan {
                auth_method,
                token: Change::Cleared,
                headers,
            })
        }
        AuthMethod::AUTH_METHOD_BEARER | AuthMethod::AUTH_METHOD_X_API_KEY => {
            if headers.is_some_and(|headers| !headers.is_empty()) {
                return Err(Error::invalid_field(
                    "headers",
                    "must be empty unless auth_method is AUTH_METHOD_CUSTOM_HEADERS",
                ));
            }
            let required = || {
                Error::invalid_field(
                    "token",
                    &format!("is required for {}", auth_method_name(auth_method)),
                )
            };
            let token = match token {
                Some("") => return Err(required()),
                Some(token) => {
                    validate::token(token)?;
                    Change::Replaced(token)
                }
                None if stored.is_some_and(|(_, has_token)| has_token) => Change::Kept,
                None => return Err(required()),
            };
            Ok(CredentialPlan {
                auth_method,
                token,
                headers: Change::Cleared,
            })
        }
        AuthMethod::AUTH_METHOD_UNSPECIFIED => Err(Error::invalid_field(
            "auth_method",
            "must not be AUTH_METHOD_UNSPECIFIED",
        )),
    }
}

/// Rejects the networked fields of a scripted provider. Present but empty
/// values are accepted, because they leave the resulting state unchanged.
fn ensure_scripted_fields_empty(
    endpoint: Option<&str>,
    auth_method: Option<AuthMethod>,
    token: Option<&str>,
    headers: Option<&[(String, String)]>,
) -> Result<()> {
    if endpoint.is_some_and(|endpoint| !endpoint.trim().is_empty()) {
        return Err(Error::invalid_field(
            "endpoint",
            "must be empty for a scripted provider",
        ));
    }
    if auth_method.is_some_and(|method| method != AuthMethod::AUTH_METHOD_UNSPECIFIED) {
        return Err(Error::invalid_field(
            "auth_method",
            "must be AUTH_METHOD_UNSPECIFIED for a scripted provider",
        ));
    }
    if token.is_some_and(|token| !token.is_empty()) {
        return Err(Error::invalid_field(
            "token",
            "must be empty for a scripted provider",
        ));
    }
    if headers.is_some_and(|headers| !headers.is_empty()) {
        return Err(Error::invalid_field(
            "headers",
            "must be empty for a scripted provider",
        ));
    }
    Ok(())
}

/// Applies an update's endpoint, protocol, credential and script to a
/// stored provider and checks the resulting state.
fn apply_update(
    key: &MasterKey,
    provider: &mut StoredProvider,
    update: &ProviderUpdate<'_>,
) -> Result<()> {
    if provider.record.is_scripted() {
        ensure_scripted_fields_empty(
            update.endpoint,
            update.auth_method,
            update.token,
            update.headers,
        )?;
        if let Some(script) = update.script {
            provider.record.script = Some(script.clone());
        }
    } else {
        if update.script.is_some() {
            return Err(Error::invalid_field(
                "script",
                "only a scripted provider takes a script; a provider cannot change between \
                 scripted and networked, so create a new provider instead",
            ));
        }
        if let Some(endpoint) = update.endpoint {
            provider.record.endpoint = validate::endpoint(endpoint)?.to_string();
        }
        let stored = (provider.record.auth_method, provider.record.has_token);
        let plan = networked_plan(
            update.auth_method.unwrap_or(stored.0),
            update.token,
            update.headers,
            Some(stored),
        )?;
        plan.apply(key, provider);
    }
    if let Some(protocol) = update.protocol {
        provider.record.protocol = protocol;
    }
    Ok(())
}

/// Digest of a CreateProvider request, bound to its idempotency key.
///
/// NOTE: the digest covers the token and the header values, so the
/// idempotency table contains a SHA-256 over them. That is safe for long
/// random provider keys but could be brute-forced for a short token.
fn create_fingerprint(
    org_id: &str,
    name: &str,
    endpoint: &str,
    protocol: Protocol,
    input: &NewProvider<'_>,
) -> String {
    let mut headers: Vec<(String, &str)> = input
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
        .collect();
    headers.sort();
    let script = input
        .script
        .map(|script| serde_json::to_string(script).expect("a script encodes as JSON"))
        .unwrap_or_default();
    let mut parts = vec![
        CREATE_SCOPE,
        org_id,
        name,
        endpoint,
        validate::protocol_name(protocol),
        auth_method_name(input.auth_method),
        input.token,
        &script,
    ];
    for (name, value) in &headers {
        parts.push(name);
        parts.push(value);
    }
    keys::fingerprint(parts)
}

fn name_taken(name: &str) -> Error {
    Error::already_exists(format!(
        "name: a provider named {name:?} already exists in the organization"
    ))
}

/// Builds the error of a DeleteProvider blocked by models, naming the
/// first of them.
fn referenced(listed: &[String], total: i64) -> Error {
    let mut message = format!("provider is referenced by model {}", listed.join(", "));
    let unlisted = total - listed.len() as i64;
    if unlisted > 0 {
        message.push_str(&format!(" and {unlisted} more"));
    }
    message.push_str("; delete those models or move them to another provider first");
    Error::failed_precondition(message).with_reason("REFERENCED")
}
