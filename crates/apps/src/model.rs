//! Records and inputs of apps and installations.

use agyn_core::Secret;
use serde_json::{Map, Value};

/// Scope of organizations that may install an app, stored as its
/// `agynio.api.apps.v1.AppVisibility` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Any organization may install the app, and any authenticated caller
    /// may read it.
    Public,
    /// Only the owning organization may install the app.
    Internal,
}

impl Visibility {
    pub fn number(self) -> i32 {
        match self {
            Self::Public => 1,
            Self::Internal => 2,
        }
    }

    pub fn from_number(number: i64) -> Option<Self> {
        match number {
            1 => Some(Self::Public),
            2 => Some(Self::Internal),
            _ => None,
        }
    }
}

/// A permission an app declares, granted in every organization that
/// installs it as one relation on the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    ThreadCreate,
    ThreadWrite,
    ParticipantAdd,
}

impl Permission {
    pub const ALL: [Self; 3] = [Self::ThreadCreate, Self::ThreadWrite, Self::ParticipantAdd];

    /// Returns the name clients declare, such as `thread:create`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ThreadCreate => "thread:create",
            Self::ThreadWrite => "thread:write",
            Self::ParticipantAdd => "participant:add",
        }
    }

    /// Returns the relation written on the installing organization.
    pub fn relation(self) -> &'static str {
        match self {
            Self::ThreadCreate => "thread_create",
            Self::ThreadWrite => "thread_write",
            Self::ParticipantAdd => "participant_add",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.name() == name)
    }
}

/// A stored app. `id` is also the app's identity id.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub id: String,
    pub organization_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub icon: String,
    pub visibility: Visibility,
    pub permissions: Vec<Permission>,
    pub endpoint: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Input of CreateApp.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub organization_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub icon: String,
    /// `None` means INTERNAL.
    pub visibility: Option<Visibility>,
    pub permissions: Vec<String>,
    pub endpoint: String,
}

/// A created app with its service token, which only CreateApp returns.
#[derive(Debug)]
pub struct CreatedApp {
    pub app: AppRecord,
    pub service_token: Secret<String>,
}

/// Fields of UpdateApp; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub visibility: Option<Visibility>,
    pub endpoint: Option<String>,
}

/// The credentials EnrollApp returns.
#[derive(Debug)]
pub struct Enrolled {
    /// JSON object with `identity_id`, `certificate_pem`,
    /// `private_key_pem` (without a CSR), `ca_pem` and `expires_at`.
    pub identity_json: Secret<Vec<u8>>,
    pub identity_id: String,
}

/// A stored installation. `app_slug` is read from the app row.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallationRecord {
    pub id: String,
    pub app_id: String,
    pub app_slug: String,
    pub organization_id: String,
    pub slug: String,
    pub configuration: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Input of InstallApp.
#[derive(Debug, Clone, Default)]
pub struct NewInstallation {
    pub app_id: String,
    pub organization_id: String,
    /// `None` or "" means the app's slug.
    pub slug: Option<String>,
    /// `None` means `{}`.
    pub configuration: Option<Map<String, Value>>,
    pub request_id: String,
}

/// Fields of UpdateInstallation; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct InstallationChanges {
    pub slug: Option<String>,
    pub configuration: Option<Map<String, Value>>,
}
