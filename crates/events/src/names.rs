//! Syntax of room and event names.

/// Maximum length of the id part of a room, after the `:`.
pub const MAX_ROOM_ID_LEN: usize = 100;

/// The room syntax, for error messages.
pub const ROOM_PATTERN: &str = "^[a-z_]+(:[A-Za-z0-9_.-]{1,100})?$";

/// The event name syntax, for error messages.
pub const EVENT_PATTERN: &str = r"^[a-z_]+(\.[a-z_]+)+$";

/// Returns whether `room` matches [`ROOM_PATTERN`]: a prefix such as
/// `organization`, optionally followed by `:` and an id.
pub fn is_valid_room(room: &str) -> bool {
    let (prefix, id) = match room.split_once(':') {
        Some((prefix, id)) => (prefix, Some(id)),
        None => (room, None),
    };
    if !is_word(prefix) {
        return false;
    }
    match id {
        None => true,
        Some(id) => {
            (1..=MAX_ROOM_ID_LEN).contains(&id.len())
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte))
        }
    }
}

/// Returns whether `event` matches [`EVENT_PATTERN`]: two or more words
/// joined by dots, such as `message.created`.
pub fn is_valid_event(event: &str) -> bool {
    let mut words = event.split('.');
    let first = words.next().is_some_and(is_word);
    let mut rest = 0;
    for word in words {
        if !is_word(word) {
            return false;
        }
        rest += 1;
    }
    first && rest > 0
}

/// Quotes `room` for an error message, cut to its first 120 characters so
/// that an oversized request does not produce an oversized message.
pub fn quoted(room: &str) -> String {
    const MAX_SHOWN: usize = 120;
    match room.char_indices().nth(MAX_SHOWN) {
        Some((end, _)) => format!("{:?}...", &room[..end]),
        None => format!("{room:?}"),
    }
}

/// `[a-z_]+`.
fn is_word(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_match_the_pattern() {
        let valid = [
            "agent_messages",
            "workloads",
            "organization:0190a2b4-1c2d-7e8f-9a0b-1c2d3e4f5a6b",
            "thread_participant:me",
            "trace:0123456789abcdef0123456789abcdef",
            "x:A.b-c_9",
        ];
        for room in valid {
            assert!(is_valid_room(room), "{room} should be valid");
        }
        let long_id = format!("agent:{}", "a".repeat(MAX_ROOM_ID_LEN + 1));
        let invalid = [
            "",
            ":id",
            "agent:",
            "Agent:1",
            "agent-x:1",
            "agent:1:2",
            "agent:a b",
            "agent:ä",
            "org anization",
            long_id.as_str(),
        ];
        for room in invalid {
            assert!(!is_valid_room(room), "{room:?} should be invalid");
        }
        let longest = format!("agent:{}", "a".repeat(MAX_ROOM_ID_LEN));
        assert!(is_valid_room(&longest));
    }

    #[test]
    fn events_match_the_pattern() {
        for event in ["message.created", "workload.updated", "a_b.c.d_e"] {
            assert!(is_valid_event(event), "{event} should be valid");
        }
        for event in [
            "",
            "message",
            "message.",
            ".created",
            "Message.created",
            "a..b",
            "a.b-c",
        ] {
            assert!(!is_valid_event(event), "{event:?} should be invalid");
        }
    }
}
