//! Turns the ids, slugs and names that users type into resource ids.
//!
//! A value shaped like a UUID is taken as an id without a lookup, so the
//! gateway's own error (`not_found`, `permission_denied`) reports a wrong
//! one. Anything else is looked up by name in the organization.

use std::collections::HashMap;

use agyn_client::organizations::{
    ListMyMembershipsRequest, ListOrganizationsRequest, Membership, MembershipStatus, Organization,
};
use agyn_client::{Gateway, agents, llm};
use buffa_types::google::protobuf::Timestamp;

use crate::error::{CliError, Result};
use crate::output;
use crate::session::OrgArgs;

/// Largest page the gateway's list methods return.
pub const PAGE_SIZE: i32 = 200;

/// Returns whether `value` has the 8-4-4-4-12 hex form of a UUID.
pub fn is_uuid(value: &str) -> bool {
    uuid::Uuid::try_parse(value).is_ok() && value.len() == 36
}

/// Parses a conversation id argument, so that a mistyped one fails as a
/// usage error that names the argument instead of an API field.
pub fn parse_conversation_id(value: &str) -> std::result::Result<String, String> {
    let value = value.trim();
    if is_uuid(value) {
        Ok(value.to_string())
    } else {
        Err(
            "a conversation id is a UUID, as in the first column of `agyn conversations list`"
                .to_string(),
        )
    }
}

/// Returns the id of the organization that `--org` names, or of the only
/// organization the caller is an active member of.
pub async fn organization(gateway: &Gateway, args: &OrgArgs) -> Result<String> {
    match args.org.as_deref().map(str::trim) {
        Some(value) if is_uuid(value) => Ok(value.to_ascii_lowercase()),
        Some(slug) => organization_by_slug(gateway, slug).await,
        None => only_membership(gateway).await,
    }
}

async fn only_membership(gateway: &Gateway) -> Result<String> {
    let memberships = active_memberships(gateway).await?;
    match memberships.as_slice() {
        [only] => Ok(only.organization_id.clone()),
        [] => Err(CliError::failed(
            "you are not a member of any organization: create one with \
             `agyn orgs create <name>`, or pass --org",
        )),
        several => {
            let choices: Vec<String> = several
                .iter()
                .map(|membership| {
                    format!(
                        "{} ({})",
                        membership.organization_slug, membership.organization_id
                    )
                })
                .collect();
            Err(CliError::usage(format!(
                "you are a member of {} organizations, so pass --org with one of: {}",
                several.len(),
                choices.join(", ")
            )))
        }
    }
}

/// Finds an organization by slug among the caller's memberships, then
/// among every organization the caller may list (cluster admins see
/// all).
async fn organization_by_slug(gateway: &Gateway, slug: &str) -> Result<String> {
    let memberships = active_memberships(gateway).await?;
    if let Some(found) = memberships
        .iter()
        .find(|membership| membership.organization_slug == slug)
    {
        return Ok(found.organization_id.clone());
    }
    let organizations = list_organizations(gateway).await?;
    match organizations.iter().find(|org| org.slug == slug) {
        Some(found) => Ok(id_of(&found.meta)),
        None => Err(CliError::failed(format!(
            "organization {slug:?} not found among the organizations you can see. \
             `agyn orgs list` lists them"
        ))),
    }
}

/// Lists the caller's ACTIVE memberships, every page.
pub async fn active_memberships(gateway: &Gateway) -> Result<Vec<Membership>> {
    let client = gateway.organizations();
    let mut memberships = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_my_memberships(ListMyMembershipsRequest {
                status: MembershipStatus::MEMBERSHIP_STATUS_ACTIVE.into(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        memberships.extend(page.memberships);
        if page.next_page_token.is_empty() {
            return Ok(memberships);
        }
        page_token = page.next_page_token;
    }
}

/// Lists every organization the caller may see, every page.
pub async fn list_organizations(gateway: &Gateway) -> Result<Vec<Organization>> {
    let client = gateway.organizations();
    let mut organizations = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_organizations(ListOrganizationsRequest {
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        organizations.extend(page.organizations);
        if page.next_page_token.is_empty() {
            return Ok(organizations);
        }
        page_token = page.next_page_token;
    }
}

/// Lists an organization's LLM providers, every page.
pub async fn list_providers(
    gateway: &Gateway,
    organization_id: &str,
) -> Result<Vec<llm::Provider>> {
    let client = gateway.llm();
    let mut providers = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_providers(llm::ListProvidersRequest {
                organization_id: organization_id.to_string(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        providers.extend(page.providers);
        if page.next_page_token.is_empty() {
            return Ok(providers);
        }
        page_token = page.next_page_token;
    }
}

/// Lists an organization's models, every page.
pub async fn list_models(gateway: &Gateway, organization_id: &str) -> Result<Vec<llm::Model>> {
    let client = gateway.llm();
    let mut models = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_models(llm::ListModelsRequest {
                organization_id: organization_id.to_string(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        models.extend(page.models);
        if page.next_page_token.is_empty() {
            return Ok(models);
        }
        page_token = page.next_page_token;
    }
}

/// Lists an organization's agents, every page.
pub async fn list_agents(gateway: &Gateway, organization_id: &str) -> Result<Vec<agents::Agent>> {
    let client = gateway.agents();
    let mut found = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_agents(agents::ListAgentsRequest {
                organization_id: organization_id.to_string(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_owned();
        found.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        page_token = page.next_page_token;
    }
}

/// Returns a label by agent id for the organization's agents: `@nickname`
/// or, for an agent without one, its name. Thread participants carry no
/// agent nicknames, so tables use these labels instead.
pub async fn agent_labels(
    gateway: &Gateway,
    organization_id: &str,
) -> Result<HashMap<String, String>> {
    let agents = list_agents(gateway, organization_id).await?;
    Ok(agents
        .iter()
        .map(|agent| {
            let label = if agent.nickname.is_empty() {
                agent.name.clone()
            } else {
                format!("@{}", agent.nickname)
            };
            (id_of(&agent.meta), label)
        })
        .collect())
}

/// Returns the id of the provider that `value` names: an id, or a
/// provider name (unique in an organization).
pub async fn provider(gateway: &Gateway, organization_id: &str, value: &str) -> Result<String> {
    if is_uuid(value) {
        return Ok(value.to_ascii_lowercase());
    }
    let providers = list_providers(gateway, organization_id).await?;
    let matches: Vec<(String, String)> = providers
        .iter()
        .filter(|provider| provider.name == value)
        .map(|provider| (id_of(&provider.meta), provider.name.clone()))
        .collect();
    single("provider", value, matches, "agyn providers list")
}

/// Returns the id of the model that `value` names: an id, or a model
/// name. Model names need not be unique, so a shared name is an error
/// that lists the ids.
pub async fn model(gateway: &Gateway, organization_id: &str, value: &str) -> Result<String> {
    if is_uuid(value) {
        return Ok(value.to_ascii_lowercase());
    }
    let models = list_models(gateway, organization_id).await?;
    let matches: Vec<(String, String)> = models
        .iter()
        .filter(|model| model.name == value)
        .map(|model| (id_of(&model.meta), model.name.clone()))
        .collect();
    single("model", value, matches, "agyn models list")
}

/// Returns the id of the agent that `value` names: an id, a nickname
/// (with or without `@`) or a name.
pub async fn agent(gateway: &Gateway, organization_id: &str, value: &str) -> Result<String> {
    if is_uuid(value) {
        return Ok(value.to_ascii_lowercase());
    }
    let agents = list_agents(gateway, organization_id).await?;
    let nickname = value.strip_prefix('@').unwrap_or(value);
    if let Some(agent) = agents.iter().find(|agent| agent.nickname == nickname) {
        return Ok(id_of(&agent.meta));
    }
    let matches: Vec<(String, String)> = agents
        .iter()
        .filter(|agent| agent.name == value)
        .map(|agent| (id_of(&agent.meta), agent.name.clone()))
        .collect();
    single("agent", value, matches, "agyn agents list")
}

/// Returns the one id in `matches`, or an error naming the kind and the
/// value.
fn single(
    kind: &str,
    value: &str,
    matches: Vec<(String, String)>,
    list_command: &str,
) -> Result<String> {
    match matches.as_slice() {
        [(id, _)] => Ok(id.clone()),
        [] => Err(CliError::failed(format!(
            "{kind} {value:?} not found in the organization. `{list_command}` lists them"
        ))),
        several => {
            let ids: Vec<&str> = several.iter().map(|(id, _)| id.as_str()).collect();
            Err(CliError::usage(format!(
                "{} {kind}s are named {value:?}, so pass one of their ids: {}",
                several.len(),
                ids.join(", ")
            )))
        }
    }
}

/// Returns the id in an optional `meta` field, or an empty string.
pub fn id_of<M: Meta + Default>(meta: &buffa::MessageField<M, buffa::Inline<M>>) -> String {
    meta.as_option()
        .map(|meta| meta.id().to_string())
        .unwrap_or_default()
}

/// Returns the creation time in an optional `meta` field, formatted by
/// [`output::timestamp`].
pub fn created_of<M: Meta + Default>(meta: &buffa::MessageField<M, buffa::Inline<M>>) -> String {
    output::timestamp(meta.as_option().and_then(Meta::created_at))
}

/// The `EntityMeta` messages of the proto packages, which are separate
/// types with the same fields.
pub trait Meta {
    fn id(&self) -> &str;
    fn created_at(&self) -> Option<&Timestamp>;
}

macro_rules! impl_meta {
    ($($meta:ty),* $(,)?) => {
        $(impl Meta for $meta {
            fn id(&self) -> &str {
                &self.id
            }

            fn created_at(&self) -> Option<&Timestamp> {
                self.created_at.as_option()
            }
        })*
    };
}

impl_meta!(
    agyn_client::organizations::EntityMeta,
    agyn_client::llm::EntityMeta,
    agyn_client::agents::EntityMeta,
    agyn_client::chat::EntityMeta,
    agyn_client::threads::EntityMeta,
    agyn_client::runners::EntityMeta,
    agyn_client::users::EntityMeta,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape_is_detected() {
        assert!(is_uuid("0193a2b4-7c1f-7e9b-8d2a-4f5e6a7b8c9d"));
        assert!(is_uuid("0193A2B4-7C1F-7E9B-8D2A-4F5E6A7B8C9D"));
        assert!(!is_uuid("helper"));
        assert!(!is_uuid("0193a2b47c1f7e9b8d2a4f5e6a7b8c9d"));
        assert!(!is_uuid("acme-0193a2b4-7c1f-7e9b-8d2a-4f5e6a7b8c9d"));
    }

    #[test]
    fn single_match_returns_its_id() {
        let matches = vec![("id-1".to_string(), "Demo".to_string())];
        assert_eq!(single("model", "Demo", matches, "x").unwrap(), "id-1");
    }

    #[test]
    fn missing_match_names_kind_and_value() {
        let error = single("model", "Demo", Vec::new(), "agyn models list").unwrap_err();
        assert_eq!(
            error.to_string(),
            "model \"Demo\" not found in the organization. `agyn models list` lists them"
        );
    }

    #[test]
    fn shared_name_lists_the_ids() {
        let matches = vec![
            ("id-1".to_string(), "Demo".to_string()),
            ("id-2".to_string(), "Demo".to_string()),
        ];
        let error = single("model", "Demo", matches, "x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "2 models are named \"Demo\", so pass one of their ids: id-1, id-2"
        );
        assert_eq!(error.exit_status(), 2);
    }
}
