//! Room lists of Subscribe: normalization, the `me` rewrite and the
//! authorization of each room.

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::{Caller, Error, Result};
use agyn_events::names;

/// Maximum number of rooms one stream may subscribe to.
pub const MAX_ROOMS: usize = 100;

/// One room of a request: as the client wrote it (trimmed) and as the
/// stream subscribes to it, with `me` replaced by the caller's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub requested: String,
    pub resolved: String,
}

/// Trims every room, drops empty ones and repeats, checks the count and
/// the syntax, and rewrites `thread_participant:me` and `identity:me` to
/// the caller's identity id. Rooms that name the same room after the
/// rewrite are kept once.
pub fn normalize(rooms: &[String], caller: &Caller) -> Result<Vec<Room>> {
    let mut trimmed: Vec<&str> = Vec::new();
    for room in rooms.iter().map(|room| room.trim()) {
        if !room.is_empty() && !trimmed.contains(&room) {
            trimmed.push(room);
        }
    }
    if trimmed.is_empty() {
        return Err(Error::invalid_field(
            "rooms",
            "at least one room is required",
        ));
    }
    if trimmed.len() > MAX_ROOMS {
        return Err(Error::invalid_field(
            "rooms",
            &format!(
                "at most {MAX_ROOMS} rooms are allowed, got {}",
                trimmed.len()
            ),
        ));
    }
    let mut normalized: Vec<Room> = Vec::with_capacity(trimmed.len());
    for room in trimmed {
        if !names::is_valid_room(room) {
            return Err(Error::invalid_field(
                "rooms",
                &format!(
                    "invalid room {}: must match {}",
                    names::quoted(room),
                    names::ROOM_PATTERN
                ),
            ));
        }
        let resolved = rewrite_me(room, caller);
        if normalized.iter().all(|seen| seen.resolved != resolved) {
            normalized.push(Room {
                requested: room.to_string(),
                resolved,
            });
        }
    }
    Ok(normalized)
}

/// Replaces `me` in the two identity rooms. A component has no identity,
/// so its `me` rooms stay as they are and are then denied.
fn rewrite_me(room: &str, caller: &Caller) -> String {
    let Caller::Identity { identity_id, .. } = caller else {
        return room.to_string();
    };
    match room {
        "thread_participant:me" => format!("thread_participant:{identity_id}"),
        "identity:me" => format!("identity:{identity_id}"),
        _ => room.to_string(),
    }
}

/// Returns whether `caller` may subscribe to `room` (a normalized room
/// after the `me` rewrite). A room with an unknown prefix, or naming a
/// resource that does not exist, is denied like one without access, so
/// that existence is not revealed.
pub async fn may_subscribe(authorizer: &Authorizer, caller: &Caller, room: &str) -> Result<bool> {
    let (prefix, id) = match room.split_once(':') {
        Some((prefix, id)) => (prefix, Some(id)),
        None => (room, None),
    };
    let identity_id = match caller {
        Caller::Identity { identity_id, .. } => Some(identity_id.as_str()),
        Caller::Component(_) => None,
    };
    match (prefix, id, identity_id) {
        ("thread_participant" | "identity", Some(id), Some(identity_id)) => Ok(id == identity_id),
        ("organization", Some(id), Some(identity_id)) => {
            authorizer
                .check(
                    &ObjectRef::identity(identity_id),
                    "can_read",
                    &ObjectRef::new("organization", id),
                )
                .await
        }
        ("agent", Some(id), Some(identity_id)) => {
            authorizer
                .check(
                    &ObjectRef::identity(identity_id),
                    "can_view",
                    &ObjectRef::new("agent", id),
                )
                .await
        }
        // NOTE: workload and trace rooms are denied to everyone until
        // workloads and tracing are built, because their read rules need
        // the workload's organization, thread and agent.
        ("workload" | "trace", ..) => Ok(false),
        ("agent_messages" | "workloads", None, None) => Ok(true),
        _ => Ok(false),
    }
}

/// Checks every room and fails on the first one denied, with
/// `permission denied: room "<room>"` naming the room as the client wrote
/// it.
pub async fn authorize(authorizer: &Authorizer, caller: &Caller, rooms: &[Room]) -> Result<()> {
    for room in rooms {
        if !may_subscribe(authorizer, caller, &room.resolved).await? {
            return Err(Error::permission_denied(format!(
                "permission denied: room {}",
                names::quoted(&room.requested)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_core::{CredentialKind, IdentityKind};

    fn user(id: &str) -> Caller {
        Caller::Identity {
            identity_id: id.to_string(),
            kind: IdentityKind::User,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        }
    }

    fn rooms(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn normalize_trims_dedupes_and_rewrites() {
        let caller = user("u1");
        let normalized = normalize(
            &rooms(&[
                " identity:me ",
                "",
                "  ",
                "identity:u1",
                "thread_participant:me",
                "agent:a1",
                "agent:a1",
            ]),
            &caller,
        )
        .unwrap();
        let resolved: Vec<&str> = normalized
            .iter()
            .map(|room| room.resolved.as_str())
            .collect();
        assert_eq!(
            resolved,
            vec!["identity:u1", "thread_participant:u1", "agent:a1"]
        );
        assert_eq!(normalized[0].requested, "identity:me");
    }

    #[test]
    fn me_means_nothing_in_other_rooms() {
        let normalized = normalize(&rooms(&["agent:me", "organization:me"]), &user("u1")).unwrap();
        let resolved: Vec<&str> = normalized
            .iter()
            .map(|room| room.resolved.as_str())
            .collect();
        assert_eq!(resolved, vec!["agent:me", "organization:me"]);
    }

    #[test]
    fn normalize_rejects_empty_and_oversized_lists() {
        let caller = user("u1");
        let error = normalize(&rooms(&["", " "]), &caller).unwrap_err();
        assert_eq!(error.message(), "rooms: at least one room is required");

        let many: Vec<String> = (0..=MAX_ROOMS).map(|i| format!("agent:a{i}")).collect();
        let error = normalize(&many, &caller).unwrap_err();
        assert_eq!(
            error.message(),
            "rooms: at most 100 rooms are allowed, got 101"
        );

        let exactly: Vec<String> = (0..MAX_ROOMS).map(|i| format!("agent:a{i}")).collect();
        assert_eq!(normalize(&exactly, &caller).unwrap().len(), MAX_ROOMS);
    }

    #[test]
    fn normalize_rejects_invalid_rooms() {
        let error = normalize(&rooms(&["agent:a1", "Agent:a2"]), &user("u1")).unwrap_err();
        assert_eq!(
            error.message(),
            "rooms: invalid room \"Agent:a2\": must match ^[a-z_]+(:[A-Za-z0-9_.-]{1,100})?$"
        );
    }

    #[test]
    fn components_keep_me() {
        let normalized =
            normalize(&rooms(&["identity:me"]), &Caller::Component("orchestrator")).unwrap();
        assert_eq!(normalized[0].resolved, "identity:me");
    }
}
