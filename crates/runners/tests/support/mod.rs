//! Shared setup: a platform database with users, organizations and the
//! platform CA, the runners service over it, an event sink that records
//! what was published, and builders for workload requests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::events::EventSink;
use agyn_core::id::new_id;
use agyn_core::{Caller, CredentialKind, Error, IdentityKind, Result};
use agyn_orgs::{Organizations, ResourceCleaner};
use agyn_pki::{KeySource, MasterKey, Pki, Subject};
use agyn_runner::{LogStream, Runner, RunnerFuture};
use agyn_runners::{
    NewRunner, NewWorkload, RunnerConnector, RunnerRecord, Runners, RunnersCleaner,
};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::Users;
use futures::StreamExt as _;

/// One published event: room, event name and payload.
#[derive(Debug, Clone)]
pub struct Published {
    pub room: String,
    pub event: String,
    pub payload: serde_json::Value,
}

/// An [`EventSink`] that keeps every event in memory.
#[derive(Default)]
pub struct RecordedEvents(Mutex<Vec<Published>>);

impl RecordedEvents {
    /// Returns the events published so far and clears the record.
    pub fn take(&self) -> Vec<Published> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl EventSink for RecordedEvents {
    fn publish(
        &self,
        _source: &'static str,
        event: &'static str,
        room: String,
        payload: serde_json::Value,
    ) {
        self.0.lock().unwrap().push(Published {
            room,
            event: event.to_string(),
            payload,
        });
    }
}

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub pki: Pki,
    pub runners: Runners,
    pub events: Arc<RecordedEvents>,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let pki = Pki::load_or_create(db.clone(), &MasterKey::generate())
            .await
            .unwrap();
        let cleaners: Vec<Arc<dyn ResourceCleaner>> =
            vec![Arc::new(RunnersCleaner::new(db.clone(), pki.clone()))];
        let orgs = Organizations::new(db.clone(), cleaners);
        let events = Arc::new(RecordedEvents::default());
        let runners =
            Runners::new(db.clone(), orgs.clone(), pki.clone()).with_events(events.clone());
        Self {
            users: Users::new(db.clone()),
            db,
            orgs,
            pki,
            runners,
            events,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("runners|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        user_caller(&user.id)
    }

    pub async fn admin(&self, name: &str) -> Caller {
        let admin = self.user(name).await;
        self.users
            .set_cluster_admin(id(&admin), true, "admin")
            .await
            .unwrap();
        admin
    }

    pub async fn org(&self, owner: &Caller, name: &str) -> String {
        self.orgs
            .create_organization(owner, name, None, "")
            .await
            .unwrap()
            .id
    }

    /// Makes `who` an ACTIVE member (not an owner) of `org`.
    pub async fn join(&self, org: &str, owner: &Caller, who: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &agyn_orgs::ops::MembershipInput {
                    organization_id: org,
                    identity_id: id(who),
                    role: Some(agyn_orgs::Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap();
        self.orgs
            .accept_membership(who, &invitation.id)
            .await
            .unwrap();
    }

    /// Makes `who` a participant of thread `thread_id`, which grants
    /// `can_read` on it.
    pub async fn join_thread(&self, thread_id: &str, who: &Caller) {
        Authorizer::new(self.db.clone())
            .write(
                &[Tuple::new(
                    ObjectRef::identity(id(who)),
                    "participant",
                    ObjectRef::new("thread", thread_id),
                )],
                &[],
            )
            .await
            .unwrap();
    }

    /// Registers an organization runner named `name` and returns it with
    /// its service token.
    pub async fn runner(&self, owner: &Caller, org: &str, name: &str) -> (RunnerRecord, String) {
        let registered = self
            .runners
            .register_runner(
                owner,
                &NewRunner {
                    name: name.to_string(),
                    organization_id: Some(org.to_string()),
                    ..NewRunner::default()
                },
            )
            .await
            .unwrap();
        (registered.runner, registered.service_token.expose().clone())
    }

    /// Issues a workload certificate and returns its serial.
    pub async fn workload_certificate(&self, agent_id: &str, workload_id: &str) -> String {
        self.pki
            .issue(
                &Subject::Workload {
                    agent_id: agent_id.to_string(),
                    workload_id: workload_id.to_string(),
                },
                KeySource::Generate,
            )
            .await
            .unwrap()
            .serial
    }

    /// Creates a STARTING workload of (thread, agent) on `runner_id` with
    /// one main container and a real workload certificate.
    pub async fn workload(
        &self,
        org: &str,
        runner_id: &str,
        thread_id: &str,
        agent_id: &str,
    ) -> agyn_runners::WorkloadRecord {
        let id = new_id();
        let serial = self.workload_certificate(agent_id, &id).await;
        let input = NewWorkload {
            credential_id: serial,
            ..new_workload(&id, org, runner_id, thread_id, agent_id)
        };
        self.runners
            .create_workload(&orchestrator(), &input)
            .await
            .unwrap()
            .0
    }

    /// Inserts an agent row named `name` in `org`, with the defaults of
    /// the agents service's schema, and returns its id.
    pub async fn agent(&self, org: &str, name: &str) -> String {
        let id = new_id();
        let mut tx = self.db.begin_write().await.unwrap();
        agyn_users::identity::register(&mut tx, &id, IdentityKind::Agent, 1)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO agents (id, organization_id, name, availability, idle_timeout_ms, \
             created_at, updated_at) VALUES ($1, $2, $3, 'internal', 300000, 1, 1)",
        )
        .bind(&id)
        .bind(org)
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// Inserts a persistent volume definition named `name` in `org`, with
    /// the defaults of the agents service's schema, and returns its id.
    pub async fn volume_definition(&self, org: &str, name: &str) -> String {
        let id = new_id();
        sqlx::query(
            "INSERT INTO volumes (id, organization_id, name, persistent, mount_path, \
             created_at, updated_at) VALUES ($1, $2, $3, 1, '/data', 1, 1)",
        )
        .bind(&id)
        .bind(org)
        .bind(name)
        .execute(self.db.pool())
        .await
        .unwrap();
        id
    }

    /// Returns `revoked_at` of certificate `serial`.
    pub async fn revoked_at(&self, serial: &str) -> Option<i64> {
        let row = sqlx::query("SELECT revoked_at FROM certificates WHERE serial = $1")
            .bind(serial)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("revoked_at").unwrap()
    }

    /// Counts the rows of `table` owned by `org`.
    pub async fn count(&self, table: &str, org: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE organization_id = $1");
        let row = sqlx::query(&sql)
            .bind(org)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("n").unwrap()
    }
}

/// Returns a CreateWorkload input with one main container named `agent`
/// and a placeholder credential serial.
pub fn new_workload(
    id: &str,
    org: &str,
    runner_id: &str,
    thread_id: &str,
    agent_id: &str,
) -> NewWorkload {
    NewWorkload {
        id: id.to_string(),
        runner_id: runner_id.to_string(),
        thread_id: thread_id.to_string(),
        agent_id: agent_id.to_string(),
        organization_id: org.to_string(),
        containers: vec![container(
            "agent",
            pb::ContainerStatus::CONTAINER_STATUS_WAITING,
        )],
        credential_id: format!("serial-{id}"),
        ..NewWorkload::default()
    }
}

pub fn container(name: &str, status: pb::ContainerStatus) -> pb::Container {
    pb::Container {
        name: name.to_string(),
        role: pb::ContainerRole::CONTAINER_ROLE_MAIN.into(),
        image: "agyn/agyn:test".to_string(),
        status: status.into(),
        ..Default::default()
    }
}

pub fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

/// Returns the caller of an agent, optionally with a workload
/// certificate for `workload_id`.
pub fn agent_caller(agent_id: &str, workload_id: Option<&str>) -> Caller {
    Caller::Identity {
        identity_id: agent_id.to_string(),
        kind: IdentityKind::Agent,
        workload_id: workload_id.map(str::to_string),
        credential: CredentialKind::Certificate,
    }
}

pub fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

pub fn orchestrator() -> Caller {
    Caller::Component("orchestrator")
}

/// Asserts the code and message of an error.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T>,
    code: agyn_core::error::Code,
    message: &str,
) {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.code(), code, "{error:?}");
    assert_eq!(error.message(), message, "{error:?}");
}

/// Returns the error of a call that should fail.
#[track_caller]
pub fn failure<T: std::fmt::Debug>(result: Result<T>) -> Error {
    result.expect_err("the call should fail")
}

/// Decodes the DER of the first certificate in a PEM text.
pub fn certificate_der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

/// A runner that serves `lines` for container `agent` of any workload.
/// With `follow` the stream stays open after the lines. `logs_gone` makes
/// it return `not_found`, as a runner does once it dropped the logs.
#[derive(Default)]
pub struct FixedLogsRunner {
    pub lines: Vec<&'static str>,
    pub logs_gone: AtomicBool,
    pub requests: Mutex<Vec<runner_pb::StreamWorkloadLogsRequest>>,
}

fn unused<T>() -> RunnerFuture<'static, T> {
    Box::pin(async { Err(Error::unimplemented("not used by the log relay")) })
}

impl Runner for FixedLogsRunner {
    fn ready(&self) -> RunnerFuture<'_, runner_pb::ReadyResponse> {
        Box::pin(async {
            Ok(runner_pb::ReadyResponse {
                status: "ok".to_string(),
                ..Default::default()
            })
        })
    }

    fn start_workload(
        &self,
        _request: runner_pb::StartWorkloadRequest,
    ) -> RunnerFuture<'_, runner_pb::StartWorkloadResponse> {
        unused()
    }

    fn stop_workload(&self, _request: runner_pb::StopWorkloadRequest) -> RunnerFuture<'_, ()> {
        unused()
    }

    fn remove_workload(&self, _request: runner_pb::RemoveWorkloadRequest) -> RunnerFuture<'_, ()> {
        unused()
    }

    fn inspect_workload(
        &self,
        _request: runner_pb::InspectWorkloadRequest,
    ) -> RunnerFuture<'_, runner_pb::InspectWorkloadResponse> {
        unused()
    }

    fn list_workloads(&self) -> RunnerFuture<'_, Vec<runner_pb::WorkloadSummary>> {
        unused()
    }

    fn list_volumes(&self) -> RunnerFuture<'_, Vec<runner_pb::VolumeSummary>> {
        unused()
    }

    fn remove_volume(&self, _request: runner_pb::RemoveVolumeRequest) -> RunnerFuture<'_, ()> {
        unused()
    }

    fn stream_workload_logs(
        &self,
        request: runner_pb::StreamWorkloadLogsRequest,
    ) -> RunnerFuture<'_, LogStream> {
        Box::pin(async move {
            let follow = request.follow;
            self.requests.lock().unwrap().push(request);
            if self.logs_gone.load(Ordering::SeqCst) {
                return Err(Error::not_found("container", "agent"));
            }
            let chunks = self.lines.iter().map(|line| {
                Ok(runner_pb::LogChunk {
                    data: line.as_bytes().to_vec(),
                    ..Default::default()
                })
            });
            let stream = futures::stream::iter(chunks.collect::<Vec<_>>());
            let stream: LogStream = if follow {
                Box::pin(stream.chain(futures::stream::pending()))
            } else {
                Box::pin(stream)
            };
            Ok(stream)
        })
    }
}

/// Connects every runner to one [`FixedLogsRunner`], or fails with
/// `unavailable` while `unreachable` is set.
pub struct FixedConnector {
    pub runner: Arc<FixedLogsRunner>,
    pub unreachable: AtomicBool,
}

impl RunnerConnector for FixedConnector {
    fn connect(&self, _runner: &RunnerRecord) -> Result<Arc<dyn Runner>> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(Error::unavailable("connection refused"));
        }
        Ok(self.runner.clone())
    }
}
