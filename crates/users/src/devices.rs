//! Devices: a user's machines holding client certificates issued by the
//! platform CA. A device certificate authenticates as its owning user.
//!
//! CreateDevice records a PENDING device and returns a one-time
//! enrollment token (`agynenr_` and 43 base62 characters, stored as its
//! SHA-256, valid 24 hours). The device exchanges the token and its own
//! certificate request at `POST /enroll` ([`Users::enroll_device`]) for a
//! certificate naming it; the token is consumed, the device becomes
//! ENROLLED and the certificate is recorded in one transaction.
//! DeleteDevice revokes the device's certificates and deletes the row, so
//! its next request fails.

use std::collections::HashMap;
use std::sync::Mutex;

use agyn_api_users::agynio::api::users::v1 as pb;
use agyn_core::page::{Cursor, Fingerprint, Page, SortOrder};
use agyn_core::time::{now_micros, timestamp};
use agyn_core::{Caller, Error, Result, Secret};
use agyn_pki::{CertificateKind, KeySource, Pki, Subject};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};
use rand::Rng as _;
use rand::distr::Alphanumeric;

use crate::Users;
use crate::tokens::{ENROLLMENT_TOKEN_PREFIX, hash};

const NAME_MAX_CHARS: usize = 64;
/// A user may hold at most this many devices, enrolled or pending.
pub const MAX_DEVICES_PER_USER: i64 = 100;
const ENROLLMENT_RANDOM_LEN: usize = 43;
const ENROLLMENT_VALIDITY_MICROS: i64 = 24 * 3600 * 1_000_000;
/// A device is ONLINE when it was seen within this window.
const ONLINE_WINDOW_MICROS: i64 = 5 * 60 * 1_000_000;
/// `last_seen_at` is written at most once per this period.
const SEEN_RESOLUTION_MICROS: i64 = 60 * 1_000_000;

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub enrolled: bool,
    pub enrolled_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub certificate_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new device and its enrollment token, returned once.
#[derive(Debug)]
pub struct CreatedDevice {
    pub device: DeviceRecord,
    pub enrollment_token: Secret<String>,
    pub enrollment_expires_at: i64,
}

/// The result of a successful enrollment, returned to the device.
#[derive(Debug)]
pub struct Enrollment {
    pub device_id: String,
    pub identity_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub expires_at: i64,
}

/// When each device was last recorded as seen by this process, so that
/// `last_seen_at` is written at most once per minute.
#[derive(Default)]
pub(crate) struct SeenDevices(Mutex<HashMap<String, i64>>);

const COLUMNS: &str = "id, user_id, name, status, enrolled_at, last_seen_at, \
    certificate_expires_at, created_at, updated_at";

fn device_from_row(row: &AnyRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        enrolled: row.try_get::<String, _>("status")? == "enrolled",
        enrolled_at: row.try_get("enrolled_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        certificate_expires_at: row.try_get("certificate_expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn generate_enrollment_token() -> Secret<String> {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(ENROLLMENT_RANDOM_LEN)
        .map(char::from)
        .collect();
    Secret::new(format!("{ENROLLMENT_TOKEN_PREFIX}{random}"))
}

fn invalid_enrollment_token() -> Error {
    Error::unauthenticated("invalid enrollment token")
}

impl Users {
    fn pki(&self) -> Result<&Pki> {
        self.pki.as_ref().ok_or_else(|| {
            Error::unavailable(
                "devices need the platform certificate authority, which is not loaded",
            )
        })
    }

    /// CreateDevice: users only.
    pub async fn create_device(&self, caller: &Caller, name: &str) -> Result<CreatedDevice> {
        let user_id = caller
            .user_id()
            .ok_or_else(|| Error::permission_denied("only users can create devices"))?;
        let name = agyn_core::text::display_name("name", name, NAME_MAX_CHARS)?;
        let token = generate_enrollment_token();
        let now = now_micros();
        let expires_at = now + ENROLLMENT_VALIDITY_MICROS;
        let device = DeviceRecord {
            id: agyn_core::id::new_id(),
            user_id: user_id.to_string(),
            name: name.to_string(),
            enrolled: false,
            enrolled_at: None,
            last_seen_at: None,
            certificate_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin_write().await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_DEVICES_PER_USER {
            return Err(Error::failed_precondition(format!(
                "device limit reached: a user may hold {MAX_DEVICES_PER_USER} devices; delete unused ones first"
            ))
            .with_reason("DEVICE_LIMIT"));
        }
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, status, enrollment_token_hash, \
             enrollment_expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $6)",
        )
        .bind(&device.id)
        .bind(user_id)
        .bind(name)
        .bind(hash(token.expose()))
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(device_id = %device.id, %user_id, "Device created");
        Ok(CreatedDevice {
            device,
            enrollment_token: token,
            enrollment_expires_at: expires_at,
        })
    }

    /// ListDevices: the caller's devices, `(created_at, id)` ascending.
    pub async fn list_devices(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<DeviceRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let fingerprint =
            Fingerprint::new("agynio.api.users.v1.UsersService/ListDevices").with(caller_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let rows = match &page.after {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM devices WHERE user_id = $1 \
                     ORDER BY created_at, id LIMIT $2"
                ))
                .bind(caller_id)
                .bind(page.fetch_limit())
                .fetch_all(self.db.pool())
                .await?
            }
            Some(cursor) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM devices WHERE user_id = $1 \
                     AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
                     ORDER BY created_at, id LIMIT $4"
                ))
                .bind(caller_id)
                .bind(cursor.position)
                .bind(&cursor.id)
                .bind(page.fetch_limit())
                .fetch_all(self.db.pool())
                .await?
            }
        };
        let devices = rows
            .iter()
            .map(device_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(devices, |device| Cursor {
            position: device.created_at,
            id: device.id.clone(),
        }))
    }

    /// DeleteDevice: the caller's own device; another user's is
    /// `not_found`. Revokes every certificate of the device.
    pub async fn delete_device(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = agyn_core::id::parse_id("id", id)?;
        let pki = self.pki()?;
        let mut tx = self.db.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
            .bind(&id)
            .bind(caller_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(Error::not_found("device", &id));
        }
        pki.revoke_subject_in(&mut tx, CertificateKind::Device, &id)
            .await?;
        tx.commit().await?;
        if let Ok(mut seen) = self.seen_devices.0.lock() {
            seen.remove(&id);
        }
        tracing::info!(device_id = %id, user_id = %caller_id, "Device deleted");
        Ok(())
    }

    /// Exchanges an enrollment token and a PEM certificate request for the
    /// device's client certificate. An unknown, used or expired token is
    /// `unauthenticated` `invalid enrollment token`; a bad request is
    /// `invalid_argument`.
    pub async fn enroll_device<T: AsRef<str>>(
        &self,
        token: &Secret<T>,
        csr_pem: &str,
    ) -> Result<Enrollment> {
        let token = token.expose().as_ref();
        if !token.starts_with(ENROLLMENT_TOKEN_PREFIX) {
            return Err(invalid_enrollment_token());
        }
        let pki = self.pki()?;
        let now = now_micros();
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(
            "SELECT id, user_id, enrollment_expires_at FROM devices \
             WHERE enrollment_token_hash = $1 AND status = 'pending'",
        )
        .bind(hash(token))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(invalid_enrollment_token)?;
        let device_id: String = row.try_get("id").map_err(Error::from)?;
        let user_id: String = row.try_get("user_id").map_err(Error::from)?;
        let expires: Option<i64> = row.try_get("enrollment_expires_at").map_err(Error::from)?;
        if expires.is_none_or(|expires| expires <= now) {
            return Err(invalid_enrollment_token());
        }
        let issued = pki
            .issue_in(
                &mut tx,
                &Subject::Device {
                    user_id: user_id.clone(),
                    device_id: device_id.clone(),
                },
                KeySource::Csr(csr_pem),
            )
            .await?;
        consume_token(&mut tx, &device_id, now, issued.not_after).await?;
        tx.commit().await?;
        tracing::info!(%device_id, %user_id, serial = %issued.serial, "Device enrolled");
        Ok(Enrollment {
            device_id,
            identity_id: user_id,
            certificate_pem: issued.certificate_pem,
            ca_pem: issued.ca_certificate_pem,
            expires_at: issued.not_after,
        })
    }

    /// Records that `device_id` made a request, at most once per minute
    /// per device; the write happens in the background and a failure is
    /// only logged.
    pub fn device_seen(&self, device_id: &str) {
        let now = now_micros();
        {
            let Ok(mut seen) = self.seen_devices.0.lock() else {
                return;
            };
            if seen
                .get(device_id)
                .is_some_and(|last| now - last < SEEN_RESOLUTION_MICROS)
            {
                return;
            }
            if seen.len() > 10_000 {
                seen.clear();
            }
            seen.insert(device_id.to_string(), now);
        }
        let db = self.db.clone();
        let device_id = device_id.to_string();
        tokio::spawn(async move {
            let result = sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&device_id)
                .execute(db.pool())
                .await;
            if let Err(error) = result {
                tracing::debug!(%error, %device_id, "Failed to record device use");
            }
        });
    }
}

async fn consume_token(
    connection: &mut AnyConnection,
    device_id: &str,
    now: i64,
    certificate_expires_at: i64,
) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE devices SET status = 'enrolled', enrollment_token_hash = NULL, \
         enrollment_expires_at = NULL, enrolled_at = $2, certificate_expires_at = $3, \
         updated_at = $2 WHERE id = $1 AND status = 'pending'",
    )
    .bind(device_id)
    .bind(now)
    .bind(certificate_expires_at)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(invalid_enrollment_token());
    }
    Ok(())
}

/// Converts a device to protobuf; connectivity is computed at `now`.
pub fn device_to_proto(device: &DeviceRecord, now: i64) -> pb::Device {
    let online = device
        .last_seen_at
        .is_some_and(|seen| now - seen <= ONLINE_WINDOW_MICROS);
    pb::Device {
        meta: pb::EntityMeta {
            id: device.id.clone(),
            created_at: timestamp(device.created_at).into(),
            updated_at: timestamp(device.updated_at).into(),
            ..Default::default()
        }
        .into(),
        user_id: device.user_id.clone(),
        name: device.name.clone(),
        status: if device.enrolled {
            pb::DeviceStatus::DEVICE_STATUS_ENROLLED
        } else {
            pb::DeviceStatus::DEVICE_STATUS_PENDING
        }
        .into(),
        connectivity: if online {
            pb::DeviceConnectivity::DEVICE_CONNECTIVITY_ONLINE
        } else {
            pb::DeviceConnectivity::DEVICE_CONNECTIVITY_OFFLINE
        }
        .into(),
        enrolled_at: device.enrolled_at.map(timestamp).into(),
        last_seen_at: device.last_seen_at.map(timestamp).into(),
        certificate_expires_at: device.certificate_expires_at.map(timestamp).into(),
        ..Default::default()
    }
}
