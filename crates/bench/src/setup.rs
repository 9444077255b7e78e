//! Creates the organization and the threads that a benchmark sends to.

use agyn_api_organizations::agynio::api::organizations::v1::CreateOrganizationRequest;
use agyn_api_threads::agynio::api::threads::v1::{
    self as threads_pb, CreateThreadRequest, ParticipantIdentifier,
};

use crate::{BenchError, connection};

/// Creates an organization as the admin and `count` threads in it, each
/// with the admin and `recipient_id` as participants. Returns the thread
/// ids.
pub async fn create_threads(
    url: &str,
    admin_token: &str,
    recipient_id: &str,
    count: usize,
) -> Result<Vec<String>, BenchError> {
    let organizations = connection::organizations(url, admin_token)?;
    let name = format!("Benchmark {}", std::process::id());
    let organization = organizations
        .create_organization(CreateOrganizationRequest {
            name,
            ..Default::default()
        })
        .await
        .map_err(|error| format!("CreateOrganization failed: {error}"))?
        .into_owned();
    let organization_id = organization.organization.meta.id.clone();

    let threads = connection::threads(url, admin_token)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let participant = ParticipantIdentifier {
            identifier: Some(
                threads_pb::__buffa::oneof::participant_identifier::Identifier::Id(
                    recipient_id.to_string(),
                ),
            ),
            ..Default::default()
        };
        let created = threads
            .create_thread(CreateThreadRequest {
                organization_id: Some(organization_id.clone()),
                participants: vec![participant],
                ..Default::default()
            })
            .await
            .map_err(|error| format!("CreateThread failed: {error}"))?
            .into_owned();
        ids.push(created.thread.meta.id.clone());
    }
    eprintln!(
        "Created organization {organization_id} with {count} threads (admin and {recipient_id})"
    );
    Ok(ids)
}
