//! The thread, message and read-state rules, on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::error::Code;
use agyn_core::events::EventSink;
use agyn_core::page::SortOrder;
use agyn_core::time::now_micros;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, ResourceCleaner, Role};
use agyn_store::{Backend, Db, on_both_backends};
use agyn_threads::ops::ListView;
use agyn_threads::{
    MessageRecord, ParticipantEntry, ParticipantRef, SendInput, ThreadRecord, ThreadStatus,
    Threads, ThreadsCleaner,
};
use agyn_users::Users;

/// One published event.
#[derive(Debug, Clone)]
struct Published {
    event: &'static str,
    room: String,
    payload: serde_json::Value,
}

/// An [`EventSink`] that keeps every event.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Published>>,
}

impl Recorder {
    fn take(&self) -> Vec<Published> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl EventSink for Recorder {
    fn publish(
        &self,
        source: &'static str,
        event: &'static str,
        room: String,
        payload: serde_json::Value,
    ) {
        assert_eq!(source, "threads");
        self.events.lock().unwrap().push(Published {
            event,
            room,
            payload,
        });
    }
}

struct World {
    db: Db,
    users: Users,
    orgs: Organizations,
    authz: Authorizer,
    threads: Threads,
    events: Arc<Recorder>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let cleaners: Vec<Arc<dyn ResourceCleaner>> =
            vec![Arc::new(ThreadsCleaner::new(db.clone()))];
        let orgs = Organizations::new(db.clone(), cleaners);
        let events = Arc::new(Recorder::default());
        Self {
            users: Users::new(db.clone()),
            authz: Authorizer::new(db.clone()),
            threads: Threads::new(db.clone(), orgs.clone(), events.clone()),
            orgs,
            events,
            db,
        }
    }

    async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("threads|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        caller(&user.id, IdentityKind::User)
    }

    async fn admin(&self, name: &str) -> Caller {
        let admin = self.user(name).await;
        self.users
            .set_cluster_admin(id(&admin), true, "admin")
            .await
            .unwrap();
        admin
    }

    async fn org(&self, owner: &Caller, name: &str) -> String {
        self.orgs
            .create_organization(owner, name, None, "")
            .await
            .unwrap()
            .id
    }

    /// Makes `who` an ACTIVE member of `org`, invited by its owner.
    async fn join(&self, org: &str, owner: &Caller, who: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &MembershipInput {
                    organization_id: org,
                    identity_id: id(who),
                    role: Some(Role::Member),
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

    /// Registers an identity of `kind` and returns it as a caller.
    async fn identity(&self, kind: IdentityKind) -> Caller {
        let identity_id = agyn_core::id::new_id();
        let mut connection = self.db.pool().acquire().await.unwrap();
        agyn_users::identity::register(&mut connection, &identity_id, kind, now_micros())
            .await
            .unwrap();
        caller(&identity_id, kind)
    }

    /// Registers an agent of `org` with the tuples the agents service
    /// writes: its organization, its own identity and its membership.
    async fn agent(&self, org: &str) -> Caller {
        let agent = self.identity(IdentityKind::Agent).await;
        let object = ObjectRef::new("agent", id(&agent));
        self.authz
            .write(
                &[
                    Tuple::new(org_ref(org), "org", object.clone()),
                    Tuple::new(ObjectRef::identity(id(&agent)), "self", object),
                    Tuple::new(ObjectRef::identity(id(&agent)), "member", org_ref(org)),
                ],
                &[],
            )
            .await
            .unwrap();
        agent
    }

    /// Gives `who` a role on `agent`, which grants `can_initiate`.
    async fn grant_agent(&self, who: &Caller, agent: &Caller) {
        self.authz
            .write(
                &[Tuple::new(
                    ObjectRef::identity(id(who)),
                    "participant",
                    ObjectRef::new("agent", id(agent)),
                )],
                &[],
            )
            .await
            .unwrap();
    }

    /// Registers an app installed in `org` with the given permissions
    /// (`thread_create`, `thread_write`, `participant_add`).
    async fn app(&self, org: &str, permissions: &[&str]) -> Caller {
        let app = self.identity(IdentityKind::App).await;
        let mut tuples = vec![Tuple::new(
            ObjectRef::identity(id(&app)),
            "member",
            org_ref(org),
        )];
        for permission in permissions {
            tuples.push(Tuple::new(
                ObjectRef::identity(id(&app)),
                permission,
                org_ref(org),
            ));
        }
        self.authz.write(&tuples, &[]).await.unwrap();
        app
    }

    async fn thread(&self, creator: &Caller, org: &str, others: &[&Caller]) -> ThreadRecord {
        let entries: Vec<ParticipantEntry> = others
            .iter()
            .enumerate()
            .map(|(index, other)| by_id(index, id(other)))
            .collect();
        self.threads
            .create_thread(creator, Some(org), &entries, "")
            .await
            .unwrap()
    }

    async fn send(
        &self,
        sender: &Caller,
        thread: &str,
        body: &str,
        request_id: &str,
    ) -> agyn_core::Result<MessageRecord> {
        self.threads
            .send_message(
                sender,
                &SendInput {
                    thread_id: thread,
                    body,
                    file_ids: &[],
                    request_id,
                },
            )
            .await
    }

    async fn unacked(&self, who: &Caller, thread: Option<&str>) -> Vec<MessageRecord> {
        self.threads
            .unacked_messages(who, thread, 200, "")
            .await
            .unwrap()
            .0
    }

    async fn all_messages(&self, who: &Caller, thread: &str) -> Vec<MessageRecord> {
        self.threads
            .get_messages(who, thread, SortOrder::Ascending, 200, "")
            .await
            .unwrap()
            .0
    }
}

fn caller(id: &str, kind: IdentityKind) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

fn org_ref(org: &str) -> ObjectRef {
    ObjectRef::new("organization", org)
}

fn by_id(index: usize, identity_id: &str) -> ParticipantEntry {
    ParticipantEntry::listed(
        "participants",
        index,
        Some(ParticipantRef::Id(identity_id.to_string())),
    )
}

fn seqs(messages: &[MessageRecord]) -> Vec<i64> {
    messages.iter().map(|message| message.seq).collect()
}

async fn concurrent_sends_store_each_key_once(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob, &carol]).await;
    w.events.take();

    // 20 calls, two per request id, all at once.
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..20 {
        let threads = w.threads.clone();
        let alice = alice.clone();
        let thread_id = thread.id.clone();
        calls.spawn(async move {
            let key = format!("key-{}", call % 10);
            let body = format!("message for {key}");
            let message = threads
                .send_message(
                    &alice,
                    &SendInput {
                        thread_id: &thread_id,
                        body: &body,
                        file_ids: &[],
                        request_id: &key,
                    },
                )
                .await
                .unwrap();
            (key, message)
        });
    }
    let mut by_key: std::collections::HashMap<String, HashSet<String>> = Default::default();
    while let Some(result) = calls.join_next().await {
        let (key, message) = result.unwrap();
        by_key.entry(key).or_default().insert(message.id);
    }
    assert_eq!(by_key.len(), 10);
    for (key, ids) in &by_key {
        assert_eq!(ids.len(), 1, "request id {key} stored {ids:?}");
    }
    let messages = w.all_messages(&alice, &thread.id).await;
    assert_eq!(seqs(&messages), (1..=10).collect::<Vec<_>>());
    let stored = w.threads.get_thread(&alice, &thread.id).await.unwrap();
    assert_eq!(stored.message_count, 10);
    assert_eq!(
        stored.last_message_at,
        Some(messages.last().unwrap().created_at)
    );
    for pair in messages.windows(2) {
        assert!(pair[0].created_at <= pair[1].created_at);
    }

    // Exactly one event per recipient and message, none for the repeats.
    let events = w.events.take();
    assert_eq!(events.len(), 20, "{events:?}");
    for recipient in [&bob, &carol] {
        let room = format!("thread_participant:{}", id(recipient));
        let delivered: HashSet<&str> = events
            .iter()
            .filter(|event| event.room == room)
            .map(|event| event.payload["message_id"].as_str().unwrap())
            .collect();
        assert_eq!(delivered.len(), 10, "room {room}");
    }
    assert!(events.iter().all(|event| event.event == "message.created"));
    let sample = &events[0];
    assert_eq!(sample.payload["thread_id"], thread.id.as_str());
    assert_eq!(sample.payload["sender_id"], id(&alice));
    assert_eq!(sample.payload["organization_id"], org.as_str());
    assert!(sample.payload["seq"].as_i64().is_some());

    // A later retry returns the stored message and publishes nothing.
    let first = &messages[0];
    let key = by_key
        .iter()
        .find(|(_, ids)| ids.contains(&first.id))
        .map(|(key, _)| key.clone())
        .unwrap();
    let again = w
        .send(&alice, &thread.id, &format!("message for {key}"), &key)
        .await
        .unwrap();
    assert_eq!(again, *first);
    assert!(w.events.take().is_empty());
    assert_eq!(w.unacked(&bob, Some(&thread.id)).await.len(), 10);
    let reused = w
        .send(&alice, &thread.id, "different text", &key)
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reused.reason(), Some("IDEMPOTENCY_KEY_REUSED"));

    // Without request ids, 20 parallel sends give 20 consecutive numbers.
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..20 {
        let threads = w.threads.clone();
        let bob = bob.clone();
        let thread_id = thread.id.clone();
        calls.spawn(async move {
            let body = format!("parallel {call}");
            threads
                .send_message(
                    &bob,
                    &SendInput {
                        thread_id: &thread_id,
                        body: &body,
                        file_ids: &[],
                        request_id: "",
                    },
                )
                .await
                .unwrap()
                .seq
        });
    }
    let mut numbers = Vec::new();
    while let Some(result) = calls.join_next().await {
        numbers.push(result.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (11..=30).collect::<Vec<_>>());
    let stored = w.threads.get_thread(&alice, &thread.id).await.unwrap();
    assert_eq!(stored.message_count, 30);
}

async fn sends_keep_each_senders_order(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&alice, "Acme").await;
    w.join(&org, &alice, &bob).await;
    let shared = w.thread(&alice, &org, &[&bob, &carol]).await;
    let other = w.thread(&bob, &org, &[&carol]).await;

    // Three senders each send one message after another while the others
    // send at the same time, so their sends share transactions.
    let mut senders = tokio::task::JoinSet::new();
    for (name, sender) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let threads = w.threads.clone();
        let sender = sender.clone();
        let thread_ids = [shared.id.clone(), other.id.clone()];
        senders.spawn(async move {
            for index in 0..20 {
                // Alice is not in the other thread.
                let thread_id = if name == "alice" || index % 2 == 0 {
                    &thread_ids[0]
                } else {
                    &thread_ids[1]
                };
                let body = format!("{name} {index}");
                threads
                    .send_message(
                        &sender,
                        &SendInput {
                            thread_id,
                            body: &body,
                            file_ids: &[],
                            request_id: "",
                        },
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(result) = senders.join_next().await {
        result.unwrap();
    }

    for (thread, expected) in [(&shared, 40), (&other, 20)] {
        let messages = w.all_messages(&carol, &thread.id).await;
        assert_eq!(seqs(&messages), (1..=expected).collect::<Vec<_>>());
        for pair in messages.windows(2) {
            assert!(pair[0].created_at <= pair[1].created_at);
        }
        for name in ["alice", "bob", "carol"] {
            let order: Vec<i64> = messages
                .iter()
                .filter_map(|message| message.body.strip_prefix(&format!("{name} ")))
                .map(|index| index.parse().unwrap())
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "{name} in thread {}", thread.id);
        }
        let stored = w.threads.get_thread(&carol, &thread.id).await.unwrap();
        assert_eq!(stored.message_count, expected);
    }
    // Carol got a row and an event for every message but her own.
    let unacked = w
        .threads
        .unacked_messages(&carol, None, 200, "")
        .await
        .unwrap()
        .0;
    assert_eq!(unacked.len(), 40);
    let carol_room = format!("thread_participant:{}", id(&carol));
    let events = w.events.take();
    assert_eq!(
        events
            .iter()
            .filter(|event| event.room == carol_room)
            .count(),
        40
    );
}

async fn stale_replica_caches_are_corrected(backend: Backend) {
    let w = World::new(backend).await;
    // A second replica over the same database, with its own caches.
    let replica = Threads::new(w.db.clone(), w.orgs.clone(), w.events.clone());
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob]).await;
    let send = |sender: &Caller, body: &str| {
        let replica = replica.clone();
        let sender = sender.clone();
        let thread_id = thread.id.clone();
        let body = body.to_string();
        async move {
            replica
                .send_message(
                    &sender,
                    &SendInput {
                        thread_id: &thread_id,
                        body: &body,
                        file_ids: &[],
                        request_id: "",
                    },
                )
                .await
        }
    };
    send(&alice, "cached").await.unwrap();
    send(&bob, "cached").await.unwrap();

    // A participant added elsewhere may send here, and gets rows for
    // messages sent here after the addition.
    w.threads
        .add_participant(&alice, &thread.id, &by_id(0, id(&carol)), false, "")
        .await
        .unwrap();
    let from_carol = send(&carol, "joined elsewhere").await.unwrap();
    assert_eq!(from_carol.seq, 3);
    let to_carol = send(&alice, "after the addition").await.unwrap();
    let unacked = w.unacked(&carol, Some(&thread.id)).await;
    assert_eq!(unacked, vec![to_carol]);

    // A thread closed elsewhere rejects sends here, with or without files.
    w.threads.archive_thread(&thread.id).await.unwrap();
    let error = send(&bob, "after archiving").await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.reason(), Some("THREAD_ARCHIVED"));
    let files = vec![agyn_core::id::new_id()];
    let error = replica
        .send_message(
            &bob,
            &SendInput {
                thread_id: &thread.id,
                body: "",
                file_ids: &files,
                request_id: "",
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("THREAD_ARCHIVED"));
    assert_eq!(w.all_messages(&alice, &thread.id).await.len(), 4);

    // A thread of an organization deleted elsewhere is not found here.
    let open = w.thread(&alice, &org, &[&bob]).await;
    let message = SendInput {
        thread_id: &open.id,
        body: "cached",
        file_ids: &[],
        request_id: "",
    };
    replica.send_message(&bob, &message).await.unwrap();
    w.orgs.delete_organization(&alice, &org).await.unwrap();
    let error = replica.send_message(&bob, &message).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}

async fn send_validates_its_input(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[]).await;
    let thread_id = thread.id.as_str();
    let too_long = "x".repeat(65_537);

    let cases: [(&str, &str, Vec<String>, &str); 7] = [
        (thread_id, "  \n\t ", vec![], "body or file_ids required"),
        (
            thread_id,
            "a\0b",
            vec![],
            "body: must not contain NUL characters",
        ),
        ("nope", "hi", vec![], "thread_id: must be a UUID"),
        (
            thread_id,
            &too_long,
            vec![],
            "body: must be at most 65536 bytes",
        ),
        (
            thread_id,
            "",
            vec!["not-a-file".into()],
            "file_ids[0]: must be a UUID",
        ),
        (
            thread_id,
            "",
            (0..11).map(|_| agyn_core::id::new_id()).collect(),
            "file_ids: must have at most 10 entries",
        ),
        (
            thread_id,
            "hi",
            vec![],
            "request_id: must be 1 to 64 characters of [A-Za-z0-9_-]",
        ),
    ];
    for (index, (thread_id, body, file_ids, expected)) in cases.iter().enumerate() {
        let request_id = if index == 6 { "bad key!" } else { "" };
        let error = w
            .threads
            .send_message(
                &alice,
                &SendInput {
                    thread_id,
                    body,
                    file_ids,
                    request_id,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "case {index}");
        assert_eq!(error.message(), *expected, "case {index}");
    }
    let unknown = w
        .send(&alice, &agyn_core::id::new_id(), "hi", "")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // The body may be exactly the maximum, and files alone suffice. File
    // ids keep their order and duplicates.
    let largest = w
        .send(&alice, &thread.id, &"y".repeat(65_536), "")
        .await
        .unwrap();
    assert_eq!(largest.body.len(), 65_536);
    let file = agyn_core::id::new_id().to_uppercase();
    let other = agyn_core::id::new_id();
    let files = vec![file.clone(), other.clone(), file.clone()];
    let attached = w
        .threads
        .send_message(
            &alice,
            &SendInput {
                thread_id: &thread.id,
                body: "",
                file_ids: &files,
                request_id: "",
            },
        )
        .await
        .unwrap();
    let lower = file.to_lowercase();
    assert_eq!(
        attached.file_ids,
        vec![lower.clone(), other.clone(), lower.clone()]
    );
    let (stored, _) = w.threads.get_message_internal(&attached.id).await.unwrap();
    assert_eq!(stored.file_ids, attached.file_ids);

    // A thread whose only participant is the sender stores the message
    // and no recipient rows.
    assert!(w.unacked(&alice, None).await.is_empty());
    assert!(w.events.take().is_empty());
}

async fn closed_threads_reject_writes_but_stay_readable(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let admin = w.admin("root").await;
    let org = w.org(&alice, "Acme").await;

    let archived = w.thread(&alice, &org, &[&bob]).await;
    let before = w
        .send(&alice, &archived.id, "before", "archived-send")
        .await
        .unwrap();
    let closed = w.threads.archive_thread(&archived.id).await.unwrap();
    assert_eq!(closed.status, ThreadStatus::Archived);
    assert!(closed.updated_at >= archived.updated_at);

    let degraded = w.thread(&alice, &org, &[&bob]).await;
    let degraded_before = w
        .send(&alice, &degraded.id, "before", "degraded-send")
        .await
        .unwrap();
    let denied = w
        .threads
        .degrade_thread(&alice, &degraded.id, "operator")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "permission denied: admin on cluster");
    let bad_reason = w
        .threads
        .degrade_thread(&admin, &degraded.id, "Volume Lost")
        .await
        .unwrap_err();
    assert_eq!(bad_reason.code(), Code::InvalidArgument);
    let closed = w
        .threads
        .degrade_thread(&admin, &degraded.id, "volume_lost")
        .await
        .unwrap();
    assert_eq!(closed.status, ThreadStatus::Degraded);
    assert_eq!(closed.degrade_reason, "volume_lost");
    let orchestrator = Caller::Component("orchestrator");
    let again = w
        .threads
        .degrade_thread(&orchestrator, &degraded.id, "operator")
        .await
        .unwrap();
    assert_eq!(again.degrade_reason, "volume_lost");

    // Terminal statuses never change into each other.
    let unchanged = w
        .threads
        .degrade_thread(&admin, &archived.id, "operator")
        .await
        .unwrap();
    assert_eq!(unchanged.status, ThreadStatus::Archived);
    assert_eq!(unchanged.degrade_reason, "");
    let unchanged = w.threads.archive_thread(&degraded.id).await.unwrap();
    assert_eq!(unchanged.status, ThreadStatus::Degraded);

    for (thread, message, reason, first, key) in [
        (
            &archived,
            "thread archived",
            "THREAD_ARCHIVED",
            &before,
            "archived-send",
        ),
        (
            &degraded,
            "thread degraded",
            "THREAD_DEGRADED",
            &degraded_before,
            "degraded-send",
        ),
    ] {
        for key in ["", "new-key"] {
            let error = w.send(&bob, &thread.id, "after", key).await.unwrap_err();
            assert_eq!(error.code(), Code::FailedPrecondition, "key {key:?}");
            assert_eq!(error.message(), message, "key {key:?}");
            assert_eq!(error.reason(), Some(reason), "key {key:?}");
        }

        // A retry of a send stored before the thread closed returns its
        // message, so a client whose response was lost learns that it
        // was stored.
        let retried = w.send(&alice, &thread.id, "before", key).await.unwrap();
        assert_eq!(&retried, first);
        let reused = w
            .send(&alice, &thread.id, "changed", key)
            .await
            .unwrap_err();
        assert_eq!(reused.reason(), Some("IDEMPOTENCY_KEY_REUSED"));

        let error = w
            .threads
            .add_participant(&alice, &thread.id, &by_id(0, id(&carol)), false, "")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert_eq!(error.message(), message);

        // Every read and ack keeps working.
        let stored = w.threads.get_thread(&bob, &thread.id).await.unwrap();
        assert_eq!(stored.message_count, 1);
        assert_eq!(w.all_messages(&bob, &thread.id).await.len(), 1);
        assert_eq!(w.unacked(&bob, Some(&thread.id)).await.len(), 1);
        let counts = w
            .threads
            .unacked_message_counts(id(&bob), None)
            .await
            .unwrap();
        assert!(counts.contains(&(thread.id.clone(), 1)), "{counts:?}");
        let acked = w
            .threads
            .ack_messages(&bob, &[], Some(&thread.id))
            .await
            .unwrap();
        assert_eq!(acked, 1);
    }
    assert_eq!(w.all_messages(&alice, &archived.id).await[0], before);
}

async fn acks_touch_only_own_rows(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob, &carol]).await;
    let first = w.send(&alice, &thread.id, "one", "").await.unwrap();
    let second = w.send(&alice, &thread.id, "two", "").await.unwrap();
    let third = w.send(&alice, &thread.id, "three", "").await.unwrap();

    // The sender never has a row for its own messages.
    assert!(w.unacked(&alice, None).await.is_empty());
    assert_eq!(
        seqs(&w.unacked(&bob, Some(&thread.id)).await),
        vec![1, 2, 3]
    );

    // Acking ids the caller has no rows for changes nothing.
    let ids = vec![first.id.clone(), second.id.clone()];
    assert_eq!(w.threads.ack_messages(&alice, &ids, None).await.unwrap(), 0);
    assert_eq!(w.unacked(&bob, None).await.len(), 3);
    assert_eq!(w.unacked(&carol, None).await.len(), 3);

    // Only newly acked rows count, and unknown ids are ignored.
    let mut with_unknown = ids.clone();
    with_unknown.push(agyn_core::id::new_id());
    assert_eq!(
        w.threads
            .ack_messages(&bob, &with_unknown, None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(w.threads.ack_messages(&bob, &ids, None).await.unwrap(), 0);
    assert_eq!(seqs(&w.unacked(&bob, None).await), vec![3]);
    assert_eq!(w.unacked(&carol, None).await.len(), 3);

    // A thread filter limits listed ids to that thread.
    let elsewhere = w.thread(&alice, &org, &[&bob]).await;
    let remote = w
        .send(&alice, &elsewhere.id, "elsewhere", "")
        .await
        .unwrap();
    let listed = vec![third.id.clone(), remote.id.clone()];
    assert_eq!(
        w.threads
            .ack_messages(&bob, &listed, Some(&elsewhere.id))
            .await
            .unwrap(),
        1
    );
    assert_eq!(seqs(&w.unacked(&bob, None).await), vec![3]);

    // A thread alone acks every row of the caller there. Neither acks none.
    assert_eq!(w.threads.ack_messages(&carol, &[], None).await.unwrap(), 0);
    assert_eq!(
        w.threads
            .ack_messages(&carol, &[], Some(&thread.id))
            .await
            .unwrap(),
        3
    );
    assert!(w.unacked(&carol, None).await.is_empty());
    assert_eq!(w.unacked(&bob, None).await.len(), 1);

    // A thread the caller is not in yields nothing rather than an error.
    let private = w.thread(&alice, &org, &[&carol]).await;
    w.send(&alice, &private.id, "private", "").await.unwrap();
    assert!(w.unacked(&bob, Some(&private.id)).await.is_empty());

    let too_many: Vec<String> = (0..501).map(|_| agyn_core::id::new_id()).collect();
    let error = w
        .threads
        .ack_messages(&bob, &too_many, None)
        .await
        .unwrap_err();
    assert_eq!(error.message(), "message_ids: must name at most 500 ids");
    let error = w
        .threads
        .ack_messages(&bob, &["x".to_string()], None)
        .await
        .unwrap_err();
    assert_eq!(error.message(), "message_ids[0]: must be a UUID");
    let component = w
        .threads
        .ack_messages(&Caller::Component("chat"), &[], Some(&thread.id))
        .await
        .unwrap_err();
    assert_eq!(component.code(), Code::Unauthenticated);
}

async fn message_pages_stay_stable_under_inserts(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob]).await;
    for n in 0..500 {
        w.send(&alice, &thread.id, &format!("m{n}"), "")
            .await
            .unwrap();
    }
    // Ordering must not depend on time: give every message one created_at.
    for table in ["messages", "message_recipients"] {
        agyn_store::sqlx::query(&format!(
            "UPDATE {table} SET created_at = $1 WHERE thread_id = $2"
        ))
        .bind(1_700_000_000_000_000_i64)
        .bind(&thread.id)
        .execute(w.db.pool())
        .await
        .unwrap();
    }

    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let writer = {
            let threads = w.threads.clone();
            let alice = alice.clone();
            let thread_id = thread.id.clone();
            tokio::spawn(async move {
                for n in 0..60 {
                    let body = format!("late {n}");
                    threads
                        .send_message(
                            &alice,
                            &SendInput {
                                thread_id: &thread_id,
                                body: &body,
                                file_ids: &[],
                                request_id: "",
                            },
                        )
                        .await
                        .unwrap();
                }
            })
        };
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = w
                .threads
                .get_messages(&bob, &thread.id, order, 20, &token)
                .await
                .unwrap();
            assert!(page.len() <= 20);
            seen.extend(seqs(&page));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        writer.await.unwrap();
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order:?}: a message was repeated"
        );
        match order {
            SortOrder::Ascending => {
                let expected: Vec<i64> = (1..=seen.len() as i64).collect();
                assert_eq!(seen, expected, "{order:?}");
                assert!(seen.len() >= 500);
            }
            SortOrder::Descending => {
                let top = seen[0];
                let expected: Vec<i64> = (1..=top).rev().collect();
                assert_eq!(seen, expected, "{order:?}");
                assert!(top >= 560);
            }
        }
    }

    // A token is bound to its order and caller.
    let (_, token) = w
        .threads
        .get_messages(&bob, &thread.id, SortOrder::Ascending, 20, "")
        .await
        .unwrap();
    let error = w
        .threads
        .get_messages(&bob, &thread.id, SortOrder::Descending, 20, &token)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    let error = w
        .threads
        .get_messages(&alice, &thread.id, SortOrder::Ascending, 20, &token)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    let error = w
        .threads
        .get_messages(&bob, &thread.id, SortOrder::Ascending, -1, "")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}

async fn unacked_pages_cover_every_thread(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let first = w.thread(&alice, &org, &[&bob]).await;
    let second = w.thread(&alice, &org, &[&bob]).await;
    for n in 0..30 {
        w.send(&alice, &first.id, &format!("a{n}"), "")
            .await
            .unwrap();
        w.send(&alice, &second.id, &format!("b{n}"), "")
            .await
            .unwrap();
    }
    // Half of the rows share one created_at, so ties are broken by
    // thread id and sequence number.
    agyn_store::sqlx::query("UPDATE message_recipients SET created_at = $1 WHERE seq <= 15")
        .bind(1_i64)
        .execute(w.db.pool())
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = w
            .threads
            .unacked_messages(&bob, None, 7, &token)
            .await
            .unwrap();
        seen.extend(
            page.into_iter()
                .map(|message| (message.thread_id, message.seq)),
        );
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen.len(), 60);
    let (low, high) = if first.id < second.id {
        (&first.id, &second.id)
    } else {
        (&second.id, &first.id)
    };
    let mut expected = Vec::new();
    for thread in [low, high] {
        expected.extend((1..=15).map(|seq| (thread.clone(), seq)));
    }
    for seq in 16..=30 {
        // Each seq was sent to the first thread, then to the second.
        expected.push((first.id.clone(), seq));
        expected.push((second.id.clone(), seq));
    }
    assert_eq!(seen, expected);

    // With a thread filter the order is by sequence number.
    let (page, next) = w
        .threads
        .unacked_messages(&bob, Some(&second.id), 25, "")
        .await
        .unwrap();
    assert_eq!(seqs(&page), (1..=25).collect::<Vec<_>>());
    let (rest, last) = w
        .threads
        .unacked_messages(&bob, Some(&second.id), 25, &next)
        .await
        .unwrap();
    assert_eq!(seqs(&rest), (26..=30).collect::<Vec<_>>());
    assert!(last.is_empty());
    let error = w
        .threads
        .unacked_messages(&bob, Some(&first.id), 25, &next)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
}

async fn non_participants_cannot_read_or_write(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &alice).await;
    w.join(&org, &owner, &bob).await;
    let thread = w.thread(&alice, &org, &[]).await;
    w.send(&alice, &thread.id, "hello", "").await.unwrap();

    for who in [&bob, &outsider] {
        let error = w.threads.get_thread(who, &thread.id).await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.message(), "permission denied: can_read on thread");
        let error = w
            .threads
            .get_messages(who, &thread.id, SortOrder::Ascending, 0, "")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        let error = w.send(who, &thread.id, "let me in", "").await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.message(), "permission denied: can_write on thread");
    }

    // The owner reads through can_view_threads but may not write.
    let seen = w.threads.get_thread(&owner, &thread.id).await.unwrap();
    assert_eq!(seen.participants.len(), 1);
    assert_eq!(w.all_messages(&owner, &thread.id).await.len(), 1);
    let error = w.send(&owner, &thread.id, "hi", "").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);

    // MINE lists the caller's threads. ORGANIZATION needs can_view_threads.
    let with_bob = w.thread(&bob, &org, &[&alice]).await;
    w.threads.archive_thread(&with_bob.id).await.unwrap();
    let mine = |who: Caller, statuses: Vec<ThreadStatus>| {
        let threads = w.threads.clone();
        async move {
            let (listed, _) = threads
                .list_threads(&who, ListView::Mine, None, &statuses, 0, "")
                .await
                .unwrap();
            listed
                .into_iter()
                .map(|thread| thread.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        mine(alice.clone(), vec![]).await,
        vec![with_bob.id.clone(), thread.id.clone()]
    );
    assert_eq!(mine(bob.clone(), vec![]).await, vec![with_bob.id.clone()]);
    assert!(mine(owner.clone(), vec![]).await.is_empty());
    assert_eq!(
        mine(alice.clone(), vec![ThreadStatus::Active]).await,
        vec![thread.id.clone()]
    );
    let (all, _) = w
        .threads
        .list_threads(&owner, ListView::Organization, Some(&org), &[], 0, "")
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let error = w
        .threads
        .list_threads(&alice, ListView::Organization, Some(&org), &[], 0, "")
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "permission denied: can_view_threads on organization"
    );
    let error = w
        .threads
        .list_threads(&owner, ListView::Organization, None, &[], 0, "")
        .await
        .unwrap_err();
    assert_eq!(error.message(), "organization_id: is required");
    let other_org = w.org(&outsider, "Other").await;
    let (filtered, _) = w
        .threads
        .list_threads(&alice, ListView::Mine, Some(&other_org), &[], 0, "")
        .await
        .unwrap();
    assert!(filtered.is_empty());

    // Pages walk newest first and tokens are bound to their filters.
    let (first, token) = w
        .threads
        .list_threads(&alice, ListView::Mine, None, &[], 1, "")
        .await
        .unwrap();
    assert_eq!(first[0].id, with_bob.id);
    let (second, last) = w
        .threads
        .list_threads(&alice, ListView::Mine, None, &[], 1, &token)
        .await
        .unwrap();
    assert_eq!(second[0].id, thread.id);
    assert!(last.is_empty());
    let error = w
        .threads
        .list_threads(
            &alice,
            ListView::Mine,
            None,
            &[ThreadStatus::Active],
            1,
            &token,
        )
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
}

async fn create_thread_validates_participants(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let stranger = w.user("stranger").await;
    let org = w.org(&alice, "Acme").await;
    let other_org = w.org(&bob, "Other").await;
    let runner = w.identity(IdentityKind::Runner).await;
    let agent = w.agent(&org).await;
    let foreign_agent = w.agent(&other_org).await;

    let create = |who: Caller, org: Option<String>, entries: Vec<ParticipantEntry>| {
        let threads = w.threads.clone();
        async move {
            threads
                .create_thread(&who, org.as_deref(), &entries, "")
                .await
        }
    };
    let some_org = Some(org.clone());
    let cases = [
        (
            vec![by_id(0, id(&runner))],
            "participants[0]: identity type runner cannot take part in threads",
        ),
        (
            vec![by_id(0, id(&bob)), by_id(1, &agyn_core::id::new_id())],
            "participants[1].id: unknown identity",
        ),
        (vec![by_id(0, "bob")], "participants[0].id: must be a UUID"),
        (
            vec![ParticipantEntry::listed(
                "participants",
                0,
                Some(ParticipantRef::Nickname("@bob".into())),
            )],
            "participants[0].nickname: unknown handle \"@bob\"",
        ),
        (
            vec![ParticipantEntry::listed("participants", 0, None)],
            "participants[0]: id or nickname is required",
        ),
        (
            vec![by_id(0, id(&foreign_agent))],
            "participants[0]: agent belongs to another organization",
        ),
        (
            (0..50).map(|index| by_id(index, id(&bob))).collect(),
            "participants: must have at most 49 entries",
        ),
    ];
    for (entries, expected) in cases {
        let error = create(alice.clone(), some_org.clone(), entries)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{expected}");
        assert_eq!(error.message(), expected);
    }
    let error = create(alice.clone(), None, vec![]).await.unwrap_err();
    assert_eq!(error.message(), "organization_id: is required");
    let error = create(alice.clone(), Some(agyn_core::id::new_id()), vec![])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    // Runners cannot create threads, and non-members lack can_create_thread.
    let error = create(runner.clone(), some_org.clone(), vec![])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let error = create(stranger.clone(), some_org.clone(), vec![])
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "permission denied: can_create_thread on organization"
    );

    // An agent participant needs can_initiate, which a role grants.
    let error = create(alice.clone(), some_org.clone(), vec![by_id(0, id(&agent))])
        .await
        .unwrap_err();
    assert_eq!(error.message(), "permission denied: can_initiate on agent");
    w.grant_agent(&alice, &agent).await;
    let thread = create(
        alice.clone(),
        some_org.clone(),
        vec![
            by_id(0, id(&agent)),
            by_id(1, id(&stranger)),
            by_id(2, &id(&stranger).to_uppercase()),
            by_id(3, id(&alice)),
        ],
    )
    .await
    .unwrap();
    let mut expected: Vec<(&str, IdentityKind)> = vec![
        (id(&alice), IdentityKind::User),
        (id(&agent), IdentityKind::Agent),
        (id(&stranger), IdentityKind::User),
    ];
    expected.sort_by_key(|(identity_id, _)| *identity_id);
    let participants: Vec<(&str, IdentityKind)> = thread
        .participants
        .iter()
        .map(|participant| (participant.id.as_str(), participant.kind))
        .collect();
    assert_eq!(participants, expected);
    assert!(thread.participants.iter().all(|p| !p.passive));
    assert_eq!(thread.status, ThreadStatus::Active);
    assert_eq!(thread.message_count, 0);
    assert_eq!(thread.last_message_at, None);
    // A user participant need not be an organization member.
    assert!(w.threads.get_thread(&stranger, &thread.id).await.is_ok());
    assert!(w.events.take().is_empty());

    // An agent caller defaults to its own organization.
    let own = create(agent.clone(), None, vec![by_id(0, id(&alice))])
        .await
        .unwrap();
    assert_eq!(own.organization_id, org);
    let error = create(agent.clone(), Some(other_org.clone()), vec![])
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "organization_id: must be the calling agent's own organization"
    );

    // Repeats with one request id create one thread.
    let entries = vec![by_id(0, id(&bob))];
    let first = w
        .threads
        .create_thread(&alice, Some(&org), &entries, "create-1")
        .await
        .unwrap();
    let again = w
        .threads
        .create_thread(&alice, Some(&org), &entries, "create-1")
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    let error = w
        .threads
        .create_thread(&alice, Some(&org), &[], "create-1")
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));

    // No thread is created in an organization being deleted.
    w.orgs.delete_organization(&bob, &other_org).await.unwrap();
    let error = create(bob.clone(), Some(other_org.clone()), vec![])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
}

async fn add_participant_rules(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&alice, "Acme").await;
    let agent = w.agent(&org).await;
    let thread = w.thread(&alice, &org, &[&bob]).await;
    w.send(&alice, &thread.id, "before carol", "")
        .await
        .unwrap();

    let error = w
        .threads
        .add_participant(&carol, &thread.id, &by_id(0, id(&carol)), false, "")
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "permission denied: can_add_participant on thread"
    );
    let entry =
        ParticipantEntry::single("participant", Some(ParticipantRef::Id(id(&carol).into())));
    let added = w
        .threads
        .add_participant(&bob, &thread.id, &entry, true, "add-carol")
        .await
        .unwrap();
    assert_eq!(added.participants.len(), 3);
    assert!(added.participant(id(&carol)).unwrap().passive);
    assert!(added.updated_at >= thread.updated_at);
    // The newcomer gets no unread rows for old messages but can read them.
    assert!(w.unacked(&carol, None).await.is_empty());
    assert_eq!(w.all_messages(&carol, &thread.id).await.len(), 1);
    // A repeat, and adding an existing participant, change nothing.
    let repeat = w
        .threads
        .add_participant(&bob, &thread.id, &entry, true, "add-carol")
        .await
        .unwrap();
    assert_eq!(repeat, added);
    let existing = w
        .threads
        .add_participant(&alice, &thread.id, &entry, false, "")
        .await
        .unwrap();
    assert_eq!(existing, added);
    let after = w.send(&alice, &thread.id, "after carol", "").await.unwrap();
    assert_eq!(w.unacked(&carol, None).await, vec![after]);

    let error = w
        .threads
        .add_participant(
            &alice,
            &thread.id,
            &ParticipantEntry::single("participant", None),
            false,
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(error.message(), "participant: id or nickname is required");
    let error = w
        .threads
        .add_participant(
            &alice,
            &thread.id,
            &ParticipantEntry::single("participant", Some(ParticipantRef::Id(id(&agent).into()))),
            false,
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(error.message(), "permission denied: can_initiate on agent");

    // An app with participant_add may add without taking part.
    let app = w.app(&org, &["participant_add"]).await;
    let dave = w.user("dave").await;
    let with_dave = w
        .threads
        .add_participant(&app, &thread.id, &by_id(0, id(&dave)), false, "")
        .await
        .unwrap();
    assert!(with_dave.participant(id(&dave)).is_some());
    assert!(with_dave.participant(id(&app)).is_none());

    // A thread has at most 50 participants.
    for n in with_dave.participants.len()..50 {
        let user = w.user(&format!("user{n}")).await;
        w.threads
            .add_participant(&alice, &thread.id, &by_id(0, id(&user)), false, "")
            .await
            .unwrap();
    }
    let full = w.threads.get_thread(&alice, &thread.id).await.unwrap();
    assert_eq!(full.participants.len(), 50);
    let joined: Vec<(i64, &str)> = full
        .participants
        .iter()
        .map(|participant| (participant.joined_at, participant.id.as_str()))
        .collect();
    let mut sorted = joined.clone();
    sorted.sort();
    assert_eq!(joined, sorted, "participants are ordered by joined_at, id");
    let latecomer = w.user("latecomer").await;
    let error = w
        .threads
        .add_participant(&alice, &thread.id, &by_id(0, id(&latecomer)), false, "")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.message(), "thread has too many participants");
}

async fn apps_with_thread_write_send_without_joining(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob]).await;
    let reader = w.app(&org, &[]).await;
    let writer = w.app(&org, &["thread_write"]).await;

    let error = w.send(&reader, &thread.id, "hi", "").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    w.events.take();
    let message = w
        .send(&writer, &thread.id, "deploy done", "")
        .await
        .unwrap();
    assert_eq!(message.sender_id, id(&writer));
    // A non-participant sender means every participant gets a row.
    assert_eq!(w.unacked(&alice, None).await, vec![message.clone()]);
    assert_eq!(w.unacked(&bob, None).await, vec![message]);
    let rooms: HashSet<String> = w
        .events
        .take()
        .into_iter()
        .map(|event| event.room)
        .collect();
    let expected: HashSet<String> = [&alice, &bob]
        .iter()
        .map(|who| format!("thread_participant:{}", id(who)))
        .collect();
    assert_eq!(rooms, expected);

    // An app with thread_create may start threads in its organization.
    let creator = w.app(&org, &["thread_create"]).await;
    let created = w.thread(&creator, &org, &[&alice]).await;
    assert!(created.participant(id(&creator)).is_some());
}

async fn agents_get_events_and_pending_work(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let active = w.agent(&org).await;
    let passive = w.agent(&org).await;
    w.grant_agent(&alice, &active).await;
    w.grant_agent(&alice, &passive).await;
    let thread = w.thread(&alice, &org, &[&active]).await;
    let passive_entry = by_id(0, id(&passive));
    w.threads
        .add_participant(&alice, &thread.id, &passive_entry, true, "")
        .await
        .unwrap();
    w.events.take();

    let first = w
        .send(&alice, &thread.id, "do the thing", "")
        .await
        .unwrap();
    let events = w.events.take();
    let rooms: Vec<&str> = events.iter().map(|event| event.room.as_str()).collect();
    assert_eq!(events.len(), 3, "{rooms:?}");
    for agent in [&active, &passive] {
        let room = format!("thread_participant:{}", id(agent));
        assert_eq!(rooms.iter().filter(|r| **r == room).count(), 1, "{room}");
    }
    let to_agents: Vec<&Published> = events
        .iter()
        .filter(|event| event.room == "agent_messages")
        .collect();
    assert_eq!(to_agents.len(), 1);
    assert_eq!(
        to_agents[0].payload["agent_ids"],
        serde_json::json!([id(&active)])
    );
    assert_eq!(to_agents[0].payload["message_id"], first.id.as_str());
    assert_eq!(to_agents[0].payload["seq"], 1);

    // A message from the agent reaches only the others and no agent room.
    w.send(&active, &thread.id, "on it", "").await.unwrap();
    let rooms: HashSet<String> = w
        .events
        .take()
        .into_iter()
        .map(|event| event.room)
        .collect();
    let expected: HashSet<String> = [&alice, &passive]
        .iter()
        .map(|who| format!("thread_participant:{}", id(who)))
        .collect();
    assert_eq!(rooms, expected);

    let second = w.send(&alice, &thread.id, "and this", "").await.unwrap();
    let chat = Caller::Component("chat");
    let (items, token) = w
        .threads
        .list_pending_agent_work(&chat, None, 0, "")
        .await
        .unwrap();
    assert!(token.is_empty());
    assert_eq!(items.len(), 1, "passive agents have no pending work");
    assert_eq!(items[0].agent_id, id(&active));
    assert_eq!(items[0].thread_id, thread.id);
    assert_eq!(items[0].organization_id, org);
    assert_eq!(items[0].unacked_count, 2);
    assert_eq!(items[0].oldest_unacked_at, first.created_at);
    let (none, _) = w
        .threads
        .list_pending_agent_work(&chat, Some(&[]), 0, "")
        .await
        .unwrap();
    assert!(none.is_empty());
    let (filtered, _) = w
        .threads
        .list_pending_agent_work(&chat, Some(std::slice::from_ref(&thread.id)), 0, "")
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);

    // Counts are per participant, and acking clears the backlog.
    let counts = w
        .threads
        .unacked_message_counts(id(&passive), Some(&org))
        .await
        .unwrap();
    assert_eq!(counts, vec![(thread.id.clone(), 3)]);
    let elsewhere = w
        .threads
        .unacked_message_counts(id(&passive), Some(&agyn_core::id::new_id()))
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    assert_eq!(
        w.threads
            .ack_messages(&active, &[first.id.clone(), second.id.clone()], None)
            .await
            .unwrap(),
        2
    );
    let (items, _) = w
        .threads
        .list_pending_agent_work(&chat, None, 0, "")
        .await
        .unwrap();
    assert!(items.is_empty());

    // Archived threads carry no pending work.
    let other = w.thread(&alice, &org, &[&active]).await;
    w.send(&alice, &other.id, "more", "").await.unwrap();
    let third = w.thread(&alice, &org, &[&active]).await;
    w.send(&alice, &third.id, "and more", "").await.unwrap();
    let (items, token) = w
        .threads
        .list_pending_agent_work(&chat, None, 1, "")
        .await
        .unwrap();
    assert_eq!(items[0].thread_id, other.id);
    let (rest, _) = w
        .threads
        .list_pending_agent_work(&chat, None, 1, &token)
        .await
        .unwrap();
    assert_eq!(rest[0].thread_id, third.id);
    w.threads.archive_thread(&other.id).await.unwrap();
    let (items, _) = w
        .threads
        .list_pending_agent_work(&chat, None, 0, "")
        .await
        .unwrap();
    let threads: Vec<&str> = items.iter().map(|item| item.thread_id.as_str()).collect();
    assert_eq!(threads, vec![third.id.as_str()]);
}

async fn internal_lookups(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let first = w.thread(&alice, &org, &[]).await;
    let second = w.thread(&alice, &org, &[]).await;
    let file = agyn_core::id::new_id();
    for thread in [&first, &second, &first] {
        w.threads
            .send_message(
                &alice,
                &SendInput {
                    thread_id: &thread.id,
                    body: "see attached",
                    file_ids: std::slice::from_ref(&file),
                    request_id: "",
                },
            )
            .await
            .unwrap();
    }
    let mut expected = vec![first.id.clone(), second.id.clone()];
    expected.sort();
    assert_eq!(
        w.threads.threads_referencing_file(&file).await.unwrap(),
        expected
    );
    assert!(
        w.threads
            .threads_referencing_file(&agyn_core::id::new_id())
            .await
            .unwrap()
            .is_empty()
    );

    let ids = vec![first.id.clone(), agyn_core::id::new_id(), second.id.clone()];
    let mut found: Vec<String> = w
        .threads
        .batch_get_threads(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|thread| thread.id)
        .collect();
    found.sort();
    assert_eq!(found, expected);
    let too_many: Vec<String> = (0..201).map(|_| agyn_core::id::new_id()).collect();
    let error = w.threads.batch_get_threads(&too_many).await.unwrap_err();
    assert_eq!(error.message(), "ids: must name at most 200 ids");

    let message = w.all_messages(&alice, &second.id).await.remove(0);
    let (stored, organization_id) = w.threads.get_message_internal(&message.id).await.unwrap();
    assert_eq!(stored, message);
    assert_eq!(organization_id, org);
    let error = w
        .threads
        .get_message_internal(&agyn_core::id::new_id())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}

async fn organization_purge_deletes_threads(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let kept_org = w.org(&bob, "Kept").await;
    let mut doomed = Vec::new();
    for _ in 0..12 {
        let thread = w.thread(&alice, &org, &[&bob]).await;
        w.threads
            .send_message(
                &alice,
                &SendInput {
                    thread_id: &thread.id,
                    body: "bye",
                    file_ids: &[agyn_core::id::new_id()],
                    request_id: "",
                },
            )
            .await
            .unwrap();
        doomed.push(thread.id);
    }
    let kept = w.thread(&bob, &kept_org, &[&alice]).await;
    w.send(&bob, &kept.id, "still here", "").await.unwrap();

    w.orgs.delete_organization(&alice, &org).await.unwrap();
    // Threads of an organization being deleted are gone for callers
    // before the purge removes them.
    let error = w.send(&alice, &doomed[0], "late", "").await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    w.orgs.purge(&org).await.unwrap();
    // The step is idempotent.
    w.threads.delete_organization_resources(&org).await.unwrap();

    for thread_id in &doomed {
        let error = w.threads.get_thread(&alice, thread_id).await.unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
        assert!(
            !w.authz
                .check(
                    &ObjectRef::identity(id(&bob)),
                    "participant",
                    &ObjectRef::new("thread", thread_id),
                )
                .await
                .unwrap()
        );
    }
    for table in [
        "threads",
        "thread_participants",
        "messages",
        "message_files",
        "message_recipients",
    ] {
        let row = agyn_store::sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(w.db.pool())
            .await
            .unwrap();
        let count: i64 = agyn_store::sqlx::Row::try_get(&row, "n").unwrap();
        let expected = match table {
            "thread_participants" => 2,
            "message_files" => 0,
            _ => 1,
        };
        assert_eq!(count, expected, "{table}");
    }
    assert_eq!(w.unacked(&alice, None).await.len(), 1);
    assert!(w.unacked(&bob, None).await.is_empty());
}

/// Deleting an organization ends access to its threads at once, before
/// the purge removes them.
async fn organization_deletion_hides_threads(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let thread = w.thread(&alice, &org, &[&bob]).await;
    w.send(&alice, &thread.id, "before the deletion", "")
        .await
        .unwrap();
    assert_eq!(w.unacked(&bob, None).await.len(), 1);

    w.orgs.delete_organization(&alice, &org).await.unwrap();
    let error = w.threads.get_thread(&bob, &thread.id).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = w.send(&bob, &thread.id, "after", "").await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert!(w.unacked(&bob, None).await.is_empty());
    assert!(w.unacked(&bob, Some(&thread.id)).await.is_empty());
    let counts = w
        .threads
        .unacked_message_counts(id(&bob), None)
        .await
        .unwrap();
    assert!(counts.is_empty(), "{counts:?}");
    let (mine, _) = w
        .threads
        .list_threads(&bob, ListView::Mine, None, &[], 0, "")
        .await
        .unwrap();
    assert!(mine.is_empty());
}

on_both_backends!(
    organization_deletion_hides_threads,
    concurrent_sends_store_each_key_once,
    sends_keep_each_senders_order,
    stale_replica_caches_are_corrected,
    send_validates_its_input,
    closed_threads_reject_writes_but_stay_readable,
    acks_touch_only_own_rows,
    message_pages_stay_stable_under_inserts,
    unacked_pages_cover_every_thread,
    non_participants_cannot_read_or_write,
    create_thread_validates_participants,
    add_participant_rules,
    apps_with_thread_write_send_without_joining,
    agents_get_events_and_pending_work,
    internal_lookups,
    organization_purge_deletes_threads,
);
