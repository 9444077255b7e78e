//! The HTTP sessions the bridge opened, each with the protocol revision
//! its `initialize` negotiated.

use std::collections::VecDeque;

/// Maximum number of open sessions. Opening one more closes the oldest,
/// so a client that initializes again and again cannot grow the list
/// without bound.
const MAX_SESSIONS: usize = 100;

/// Open sessions, oldest first.
#[derive(Default)]
pub struct Sessions {
    open: VecDeque<Session>,
}

struct Session {
    id: String,
    protocol_version: Option<String>,
}

impl Sessions {
    /// Opens a session with a new random id and returns the id.
    pub fn open(&mut self, protocol_version: Option<String>) -> String {
        // A v4 UUID has 122 random bits, and its text is visible ASCII as
        // the transport requires.
        let id = uuid::Uuid::new_v4().to_string();
        if self.open.len() >= MAX_SESSIONS {
            self.open.pop_front();
        }
        self.open.push_back(Session {
            id: id.clone(),
            protocol_version,
        });
        id
    }

    /// Returns the negotiated protocol revision of session `id` (`None`
    /// inside when the server named none), or `None` for an unknown id.
    pub fn protocol_version(&self, id: &str) -> Option<Option<&str>> {
        self.open
            .iter()
            .find(|session| session.id == id)
            .map(|session| session.protocol_version.as_deref())
    }

    /// Closes session `id` and returns whether it was open.
    pub fn close(&mut self, id: &str) -> bool {
        let before = self.open.len();
        self.open.retain(|session| session.id != id);
        self.open.len() != before
    }
}
