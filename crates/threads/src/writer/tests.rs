//! Batches handed to the writer directly, so that each test controls
//! which sends share a transaction.

use std::sync::{Arc, Mutex};

use agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest;
use agyn_core::error::Code;
use agyn_core::events::EventSink;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_orgs::Organizations;
use agyn_store::sqlx;
use agyn_store::{Backend, on_both_backends};
use agyn_users::Users;

use super::{SendRequest, Writer};
use crate::store::{MessageRecord, ThreadRecord};
use crate::{Threads, keys};

/// An [`EventSink`] that keeps the rooms and message ids it was given.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, String)>>,
}

impl EventSink for Recorder {
    fn publish(
        &self,
        _source: &'static str,
        _event: &'static str,
        room: String,
        payload: serde_json::Value,
    ) {
        let message_id = payload["message_id"].as_str().unwrap().to_string();
        self.events.lock().unwrap().push((room, message_id));
    }
}

struct Fixture {
    threads: Threads,
    writer: Writer,
    events: Arc<Recorder>,
    alice: Caller,
    bob: Caller,
    thread: ThreadRecord,
}

impl Fixture {
    /// Alice's thread with Bob, on a fresh database.
    async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let users = Users::new(db.clone());
        let orgs = Organizations::new(db.clone(), Vec::new());
        let events = Arc::new(Recorder::default());
        let threads = Threads::new(db.clone(), orgs.clone(), events.clone());
        let alice = user(&users, "alice").await;
        let bob = user(&users, "bob").await;
        let org = orgs
            .create_organization(&alice, "Acme", None, "")
            .await
            .unwrap();
        let thread = create_thread(&threads, &alice, &org.id, &bob).await;
        let writer = Writer {
            db,
            events: events.clone(),
            hooks: Vec::new(),
            cache: threads.cache.clone(),
        };
        Self {
            threads,
            writer,
            events,
            alice,
            bob,
            thread,
        }
    }

    fn request(&self, sender: &Caller, thread_id: &str, body: &str, key: &str) -> SendRequest {
        SendRequest {
            sender_id: sender.identity_id().unwrap().to_string(),
            sender_kind: IdentityKind::User,
            thread_id: thread_id.to_string(),
            body: body.to_string(),
            file_ids: Vec::new(),
            request_id: key.to_string(),
            fingerprint: keys::fingerprint([thread_id, body]),
        }
    }

    async fn messages(&self, thread_id: &str) -> Vec<MessageRecord> {
        let (messages, _) = self
            .threads
            .get_messages(
                &self.alice,
                thread_id,
                agyn_core::page::SortOrder::Ascending,
                200,
                "",
            )
            .await
            .unwrap();
        messages
    }

    fn events(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.events.events.lock().unwrap())
    }
}

async fn user(users: &Users, name: &str) -> Caller {
    let request = ResolveOrCreateUserRequest {
        oidc_subject: format!("writer|{name}"),
        preferred_username: name.to_string(),
        ..Default::default()
    };
    let (user, _) = users.resolve_or_create_user(&request).await.unwrap();
    Caller::Identity {
        identity_id: user.id,
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

async fn create_thread(
    threads: &Threads,
    creator: &Caller,
    org: &str,
    other: &Caller,
) -> ThreadRecord {
    let entry = crate::ParticipantEntry::listed(
        "participants",
        0,
        Some(crate::ParticipantRef::Id(
            other.identity_id().unwrap().to_string(),
        )),
    );
    threads
        .create_thread(creator, Some(org), &[entry], "")
        .await
        .unwrap()
}

fn room(caller: &Caller) -> String {
    format!("thread_participant:{}", caller.identity_id().unwrap())
}

async fn batch_numbers_sends_in_order(backend: Backend) {
    let f = Fixture::new(backend).await;
    let requests: Vec<SendRequest> = (0..10)
        .map(|index| f.request(&f.alice, &f.thread.id, &format!("message {index}"), ""))
        .collect();
    let batch: Vec<&SendRequest> = requests.iter().collect();
    let results = f.writer.store(&batch).await;

    let stored: Vec<MessageRecord> = results.into_iter().map(Result::unwrap).collect();
    let numbers: Vec<i64> = stored.iter().map(|message| message.seq).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
    let messages = f.messages(&f.thread.id).await;
    assert_eq!(messages, stored);
    for (index, message) in messages.iter().enumerate() {
        assert_eq!(message.body, format!("message {index}"));
    }
    for pair in messages.windows(2) {
        assert!(pair[0].created_at <= pair[1].created_at);
    }
    let thread = f.threads.get_thread(&f.alice, &f.thread.id).await.unwrap();
    assert_eq!(thread.message_count, 10);
    assert_eq!(thread.last_message_at, Some(messages[9].created_at));

    // One event per message to Bob, in seq order, and Bob has ten
    // unacked rows.
    let events = f.events();
    let expected: Vec<(String, String)> = messages
        .iter()
        .map(|message| (room(&f.bob), message.id.clone()))
        .collect();
    assert_eq!(events, expected);
    let (unacked, _) = f
        .threads
        .unacked_messages(&f.bob, Some(&f.thread.id), 200, "")
        .await
        .unwrap();
    assert_eq!(unacked.len(), 10);
}

async fn failed_sends_leave_batch_intact(backend: Backend) {
    let f = Fixture::new(backend).await;
    let closed = create_thread(&f.threads, &f.alice, &f.thread.organization_id, &f.bob).await;
    f.threads.archive_thread(&closed.id).await.unwrap();
    let earlier = f
        .writer
        .store(&[&f.request(&f.alice, &f.thread.id, "earlier", "used")])
        .await
        .pop()
        .unwrap()
        .unwrap();
    f.events();

    let requests = [
        f.request(&f.alice, &f.thread.id, "first", ""),
        // Closed after its checks passed.
        f.request(&f.alice, &closed.id, "to the closed thread", ""),
        // Gone after its checks passed.
        f.request(&f.alice, &agyn_core::id::new_id(), "to no thread", ""),
        // A key stored by an earlier transaction, with other content.
        f.request(&f.alice, &f.thread.id, "other content", "used"),
        // The same key and content as an earlier transaction.
        f.request(&f.alice, &f.thread.id, "earlier", "used"),
        f.request(&f.alice, &f.thread.id, "keyed", "fresh"),
        // The same key as the send above, in the same batch.
        f.request(&f.alice, &f.thread.id, "keyed", "fresh"),
        f.request(&f.alice, &f.thread.id, "reused in the batch", "fresh"),
        f.request(&f.bob, &f.thread.id, "last", ""),
    ];
    let batch: Vec<&SendRequest> = requests.iter().collect();
    let mut results = f.writer.store(&batch).await.into_iter();

    let first = results.next().unwrap().unwrap();
    assert_eq!(first.seq, 2);
    let archived = results.next().unwrap().unwrap_err();
    assert_eq!(archived.code(), Code::FailedPrecondition);
    assert_eq!(archived.reason(), Some("THREAD_ARCHIVED"));
    let missing = results.next().unwrap().unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let reused = results.next().unwrap().unwrap_err();
    assert_eq!(reused.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let replayed = results.next().unwrap().unwrap();
    assert_eq!(replayed, earlier);
    let keyed = results.next().unwrap().unwrap();
    assert_eq!(keyed.seq, 3);
    let repeat = results.next().unwrap().unwrap();
    assert_eq!(repeat, keyed);
    let reused_in_batch = results.next().unwrap().unwrap_err();
    assert_eq!(reused_in_batch.code(), Code::AlreadyExists);
    assert_eq!(reused_in_batch.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let last = results.next().unwrap().unwrap();
    assert_eq!(last.seq, 4);
    assert!(results.next().is_none());

    // Only the three new messages are stored, and each has one event.
    let bodies: Vec<String> = f
        .messages(&f.thread.id)
        .await
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(bodies, ["earlier", "first", "keyed", "last"]);
    assert!(f.messages(&closed.id).await.is_empty());
    let events = f.events();
    let expected = vec![
        (room(&f.bob), first.id.clone()),
        (room(&f.bob), keyed.id.clone()),
        (room(&f.alice), last.id.clone()),
    ];
    assert_eq!(events, expected);

    // The key recorded inside the batch replays later.
    let again = f
        .writer
        .store(&[&f.request(&f.alice, &f.thread.id, "keyed", "fresh")])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(again, keyed);
    assert!(f.events().is_empty());
}

/// Makes inserting a message whose body is `poison` fail, the way a
/// database error fails a transaction.
async fn poison_messages(f: &Fixture, backend: Backend) {
    let pool = f.threads.db().pool();
    match backend {
        Backend::Sqlite => {
            sqlx::query(
                "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned message'); END",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            sqlx::query(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poisoned message'; END IF; \
                 RETURN NEW; END $$",
            )
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER poison BEFORE INSERT ON messages \
                 FOR EACH ROW EXECUTE FUNCTION poison()",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn failed_batch_stores_sends_alone(backend: Backend) {
    let f = Fixture::new(backend).await;
    poison_messages(&f, backend).await;
    let requests = [
        f.request(&f.alice, &f.thread.id, "one", "key-one"),
        f.request(&f.alice, &f.thread.id, "poison", ""),
        f.request(&f.bob, &f.thread.id, "two", ""),
    ];
    let batch: Vec<&SendRequest> = requests.iter().collect();
    let mut results = f.writer.store(&batch).await.into_iter();

    let one = results.next().unwrap().unwrap();
    assert_eq!(one.seq, 1);
    let poisoned = results.next().unwrap().unwrap_err();
    assert_eq!(poisoned.code(), Code::Internal);
    let two = results.next().unwrap().unwrap();
    assert_eq!(two.seq, 2);

    let messages = f.messages(&f.thread.id).await;
    assert_eq!(messages, vec![one.clone(), two.clone()]);
    let thread = f.threads.get_thread(&f.alice, &f.thread.id).await.unwrap();
    assert_eq!(thread.message_count, 2);
    let events = f.events();
    assert_eq!(
        events,
        vec![(room(&f.bob), one.id.clone()), (room(&f.alice), two.id)]
    );

    // The key of the first send was recorded by its own transaction.
    let again = f
        .writer
        .store(&[&f.request(&f.alice, &f.thread.id, "one", "key-one")])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(again, one);
}

async fn large_batch_splits_statements(backend: Backend) {
    let f = Fixture::new(backend).await;
    // 49 recipients and 100 messages: 4,900 unacked rows, more than one
    // statement inserts, and on PostgreSQL more bind parameters than the
    // single statement takes.
    let users = Users::new(f.threads.db().clone());
    let mut others = Vec::new();
    for index in 0..49 {
        others.push(user(&users, &format!("member{index}")).await);
    }
    let entries: Vec<crate::ParticipantEntry> = others
        .iter()
        .enumerate()
        .map(|(index, other)| {
            crate::ParticipantEntry::listed(
                "participants",
                index,
                Some(crate::ParticipantRef::Id(
                    other.identity_id().unwrap().to_string(),
                )),
            )
        })
        .collect();
    let crowded = f
        .threads
        .create_thread(&f.alice, Some(&f.thread.organization_id), &entries, "")
        .await
        .unwrap();
    let requests: Vec<SendRequest> = (0..100)
        .map(|index| f.request(&f.alice, &crowded.id, &format!("message {index}"), ""))
        .chain([f.request(&f.alice, &f.thread.id, "elsewhere", "")])
        .collect();
    let batch: Vec<&SendRequest> = requests.iter().collect();
    let results = f.writer.store(&batch).await;
    assert!(results.iter().all(Result::is_ok));

    let messages = f.messages(&crowded.id).await;
    assert_eq!(messages.len(), 100);
    let numbers: Vec<i64> = messages.iter().map(|message| message.seq).collect();
    assert_eq!(numbers, (1..=100).collect::<Vec<_>>());
    let thread = f.threads.get_thread(&f.alice, &crowded.id).await.unwrap();
    assert_eq!(thread.message_count, 100);
    let other = f.threads.get_thread(&f.alice, &f.thread.id).await.unwrap();
    assert_eq!(other.message_count, 1);
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM message_recipients WHERE thread_id = $1")
            .bind(&crowded.id)
            .fetch_one(f.threads.db().pool())
            .await
            .unwrap();
    assert_eq!(rows, 4_900);
    assert_eq!(f.events().len(), 4_901);
}

on_both_backends!(
    large_batch_splits_statements,
    batch_numbers_sends_in_order,
    failed_sends_leave_batch_intact,
    failed_batch_stores_sends_alone,
);
