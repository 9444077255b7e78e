//! The conversation rules, on SQLite and PostgreSQL.

use std::sync::Arc;

use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_chat::{ActivityStatus, Chat, ChatCleaner, ConversationStatus, CreateInput, SummaryHook};
use agyn_core::error::Code;
use agyn_core::events::NoEvents;
use agyn_core::time::now_micros;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, ResourceCleaner, Role};
use agyn_store::{Backend, Db, on_both_backends};
use agyn_threads::{
    ParticipantEntry, ParticipantRef, SendInput, ThreadStatus, Threads, ThreadsCleaner,
};
use agyn_users::Users;

struct World {
    db: Db,
    users: Users,
    orgs: Organizations,
    authz: Authorizer,
    threads: Threads,
    chat: Chat,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let cleaners: Vec<Arc<dyn ResourceCleaner>> = vec![
            Arc::new(ChatCleaner::new(db.clone())),
            Arc::new(ThreadsCleaner::new(db.clone())),
        ];
        let orgs = Organizations::new(db.clone(), cleaners);
        let threads = Threads::new(db.clone(), orgs.clone(), Arc::new(NoEvents))
            .with_post_send_hook(Arc::new(SummaryHook::new(db.clone())));
        Self {
            users: Users::new(db.clone()),
            authz: Authorizer::new(db.clone()),
            chat: Chat::new(db.clone(), threads.clone()),
            threads,
            orgs,
            db,
        }
    }

    async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("chat|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        caller(&user.id, IdentityKind::User)
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

    /// Registers an agent of `org` that `initiator` may start threads
    /// with.
    async fn agent(&self, org: &str, initiator: &Caller) -> Caller {
        let agent_id = agyn_core::id::new_id();
        let mut connection = self.db.pool().acquire().await.unwrap();
        agyn_users::identity::register(
            &mut connection,
            &agent_id,
            IdentityKind::Agent,
            now_micros(),
        )
        .await
        .unwrap();
        drop(connection);
        let object = ObjectRef::new("agent", &agent_id);
        let org_ref = ObjectRef::new("organization", org);
        self.authz
            .write(
                &[
                    Tuple::new(org_ref.clone(), "org", object.clone()),
                    Tuple::new(ObjectRef::identity(&agent_id), "member", org_ref),
                    Tuple::new(ObjectRef::identity(id(initiator)), "participant", object),
                ],
                &[],
            )
            .await
            .unwrap();
        caller(&agent_id, IdentityKind::Agent)
    }

    async fn create(
        &self,
        who: &Caller,
        org: &str,
        others: &[&Caller],
        summary: Option<&str>,
    ) -> agyn_core::Result<agyn_chat::Conversation> {
        let ids: Vec<String> = others.iter().map(|other| id(other).to_string()).collect();
        self.chat
            .create_conversation(
                who,
                &CreateInput {
                    organization_id: org,
                    participant_ids: &ids,
                    summary,
                    request_id: "",
                },
            )
            .await
    }

    async fn send(&self, who: &Caller, thread: &str, body: &str) -> agyn_threads::MessageRecord {
        self.threads
            .send_message(
                who,
                &SendInput {
                    thread_id: thread,
                    body,
                    file_ids: &[],
                    request_id: "",
                },
            )
            .await
            .unwrap()
    }

    async fn summary(&self, who: &Caller, id: &str) -> Option<String> {
        self.chat
            .get_conversation(who, id)
            .await
            .unwrap()
            .record
            .summary
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

async fn conversation_lifecycle(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    w.join(&org, &alice, &bob).await;

    let created = w
        .create(&alice, &org, &[&bob], Some("Planning"))
        .await
        .unwrap();
    let id_of = created.record.thread_id.clone();
    assert_eq!(created.record.status, ConversationStatus::Open);
    assert_eq!(created.record.summary.as_deref(), Some("Planning"));
    assert_eq!(created.record.organization_id, org);
    assert_eq!(created.unread_count, 0);
    assert_eq!(created.activity, ActivityStatus::Unspecified);
    assert_eq!(created.thread.participants.len(), 2);
    // The conversation is a thread with the same id.
    let thread = w.threads.get_thread(&bob, &id_of).await.unwrap();
    assert_eq!(thread.organization_id, org);

    // Input checks.
    let error = w.create(&alice, &org, &[&alice], None).await.unwrap_err();
    assert_eq!(
        error.message(),
        "participant_ids: must name at least one identity other than the caller"
    );
    let error = w.create(&alice, &org, &[], None).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let long = "s".repeat(201);
    let error = w
        .create(&alice, &org, &[&bob], Some(&long))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "summary: must be at most 200 characters");
    let bad_ids = vec!["bob".to_string()];
    let error = w
        .chat
        .create_conversation(
            &alice,
            &CreateInput {
                organization_id: &org,
                participant_ids: &bad_ids,
                summary: None,
                request_id: "",
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.message(), "participant_ids[0]: must be a UUID");
    let unknown = vec![agyn_core::id::new_id()];
    let error = w
        .chat
        .create_conversation(
            &alice,
            &CreateInput {
                organization_id: &org,
                participant_ids: &unknown,
                summary: None,
                request_id: "",
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.message(), "participant_ids[0]: unknown identity");
    // Every CreateThread check applies.
    let outsider = w.user("outsider").await;
    let error = w.create(&outsider, &org, &[&bob], None).await.unwrap_err();
    assert_eq!(
        error.message(),
        "permission denied: can_create_thread on organization"
    );

    // An empty summary leaves it unset, and messages count as unread.
    let second = w.create(&bob, &org, &[&alice], Some("")).await.unwrap();
    let second_id = second.record.thread_id.clone();
    assert_eq!(second.record.summary, None);
    let m1 = w.send(&bob, &second_id, "first").await;
    w.send(&bob, &second_id, "second").await;
    w.send(&alice, &id_of, "for bob").await;

    let (listed, token) = w
        .chat
        .list_conversations(&alice, &org, None, 0, "")
        .await
        .unwrap();
    assert!(token.is_empty());
    let ids: Vec<&str> = listed
        .iter()
        .map(|conversation| conversation.record.thread_id.as_str())
        .collect();
    assert_eq!(ids, vec![second_id.as_str(), id_of.as_str()]);
    assert_eq!(listed[0].unread_count, 2);
    assert_eq!(listed[1].unread_count, 0);
    assert_eq!(listed[0].thread.message_count, 2);
    let (page, token) = w
        .chat
        .list_conversations(&alice, &org, None, 1, "")
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let (rest, last) = w
        .chat
        .list_conversations(&alice, &org, None, 1, &token)
        .await
        .unwrap();
    assert_eq!(rest[0].record.thread_id, id_of);
    assert!(last.is_empty());
    let (none, _) = w
        .chat
        .list_conversations(&outsider, &org, None, 0, "")
        .await
        .unwrap();
    assert!(none.is_empty());

    let counts = w.chat.unread_counts(&alice, Some(&org)).await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(second_id.clone(), 2)]
    );
    let counts = w.chat.unread_counts(&bob, None).await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(id_of.clone(), 1)]
    );
    // Threads without a chat record are left out of the counts.
    let plain = w
        .threads
        .create_thread(
            &bob,
            Some(&org),
            &[ParticipantEntry::listed(
                "participants",
                0,
                Some(ParticipantRef::Id(id(&alice).to_string())),
            )],
            "",
        )
        .await
        .unwrap();
    w.send(&bob, &plain.id, "not a conversation").await;
    let counts = w.chat.unread_counts(&alice, None).await.unwrap();
    assert_eq!(counts.len(), 1);

    // MarkRead acks the caller's own rows, listed or all.
    let read = w
        .chat
        .mark_read(&alice, &second_id, std::slice::from_ref(&m1.id))
        .await
        .unwrap();
    assert_eq!(read, 1);
    let read = w.chat.mark_read(&alice, &second_id, &[]).await.unwrap();
    assert_eq!(read, 1);
    let read = w.chat.mark_read(&alice, &second_id, &[]).await.unwrap();
    assert_eq!(read, 0);
    // Ids of other conversations are ignored.
    let foreign = w.send(&bob, &plain.id, "elsewhere").await;
    let read = w
        .chat
        .mark_read(&alice, &second_id, &[foreign.id])
        .await
        .unwrap();
    assert_eq!(read, 0);
    assert!(
        w.chat
            .unread_counts(&alice, Some(&org))
            .await
            .unwrap()
            .is_empty()
    );

    // UpdateConversation changes status and summary, independently.
    let updated = w
        .chat
        .update_conversation(&alice, &id_of, Some(Some(ConversationStatus::Closed)), None)
        .await
        .unwrap();
    assert_eq!(updated.record.status, ConversationStatus::Closed);
    assert_eq!(updated.record.summary.as_deref(), Some("Planning"));
    assert!(updated.updated_at() >= created.updated_at());
    let (closed, _) = w
        .chat
        .list_conversations(&alice, &org, Some(ConversationStatus::Closed), 0, "")
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    let (open, _) = w
        .chat
        .list_conversations(&alice, &org, Some(ConversationStatus::Open), 0, "")
        .await
        .unwrap();
    assert_eq!(open[0].record.thread_id, second_id);
    // A closed conversation still accepts messages.
    w.send(&bob, &id_of, "still open for messages").await;
    let cleared = w
        .chat
        .update_conversation(&bob, &id_of, None, Some(""))
        .await
        .unwrap();
    assert_eq!(cleared.record.summary, None);
    assert_eq!(cleared.record.status, ConversationStatus::Closed);
    let error = w
        .chat
        .update_conversation(&bob, &id_of, None, None)
        .await
        .unwrap_err();
    assert_eq!(error.message(), "no fields to update");
    let error = w
        .chat
        .update_conversation(&bob, &id_of, Some(None), None)
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "status: must not be CONVERSATION_STATUS_UNSPECIFIED"
    );
    let error = w
        .chat
        .update_conversation(&bob, &id_of, None, Some(&long))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    // Updates work whatever the thread status.
    w.threads.archive_thread(&id_of).await.unwrap();
    let archived = w
        .chat
        .update_conversation(
            &bob,
            &id_of,
            Some(Some(ConversationStatus::Open)),
            Some("Done"),
        )
        .await
        .unwrap();
    assert_eq!(archived.thread.status, ThreadStatus::Archived);
    assert_eq!(archived.record.summary.as_deref(), Some("Done"));
}

async fn create_is_idempotent_on_request_id(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let ids = vec![id(&bob).to_string()];
    let input = CreateInput {
        organization_id: &org,
        participant_ids: &ids,
        summary: Some("Hello"),
        request_id: "conv-1",
    };

    // Concurrent first calls with one key create one conversation.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let chat = w.chat.clone();
        let alice = alice.clone();
        let org = org.clone();
        let ids = ids.clone();
        calls.spawn(async move {
            chat.create_conversation(
                &alice,
                &CreateInput {
                    organization_id: &org,
                    participant_ids: &ids,
                    summary: Some("Hello"),
                    request_id: "conv-1",
                },
            )
            .await
            .unwrap()
            .record
            .thread_id
        });
    }
    let mut created = Vec::new();
    while let Some(result) = calls.join_next().await {
        created.push(result.unwrap());
    }
    created.dedup();
    assert_eq!(created.len(), 1, "{created:?}");

    let again = w.chat.create_conversation(&alice, &input).await.unwrap();
    assert_eq!(again.record.thread_id, created[0]);
    let (listed, _) = w
        .chat
        .list_conversations(&alice, &org, None, 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let error = w
        .chat
        .create_conversation(
            &alice,
            &CreateInput {
                summary: Some("Other"),
                ..input
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
}

async fn summary_hook_fills_absent_summary(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let agent = w.agent(&org, &alice).await;

    let conversation = w.create(&alice, &org, &[&bob, &agent], None).await.unwrap();
    let id_of = conversation.record.thread_id.clone();
    // Agents' messages and blank first lines leave the summary unset.
    w.send(&agent, &id_of, "Hello, how can I help?").await;
    assert_eq!(w.summary(&alice, &id_of).await, None);
    w.send(&alice, &id_of, "   \nsecond line").await;
    assert_eq!(w.summary(&alice, &id_of).await, None);
    // A user's first line sets it, trimmed and cut to 80 characters.
    let long = format!("  {}  \nrest", "é".repeat(90));
    w.send(&bob, &id_of, &long).await;
    let summary = w.summary(&alice, &id_of).await.unwrap();
    assert_eq!(summary, "é".repeat(80));
    // Later messages never replace it.
    w.send(&alice, &id_of, "Something else").await;
    assert_eq!(w.summary(&alice, &id_of).await, Some(summary));
    // After clearing, the next user message sets it again.
    w.chat
        .update_conversation(&alice, &id_of, None, Some(""))
        .await
        .unwrap();
    w.send(&alice, &id_of, "Fresh start").await;
    assert_eq!(
        w.summary(&alice, &id_of).await.as_deref(),
        Some("Fresh start")
    );

    // An explicit summary always wins.
    let named = w
        .create(&alice, &org, &[&bob], Some("Named"))
        .await
        .unwrap();
    w.send(&bob, &named.record.thread_id, "Ignored").await;
    assert_eq!(
        w.summary(&alice, &named.record.thread_id).await.as_deref(),
        Some("Named")
    );
}

async fn summary_follows_first_concurrent_send(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let conversation = w.create(&alice, &org, &[&bob], None).await.unwrap();
    let id_of = conversation.record.thread_id.clone();
    let plain = w
        .threads
        .create_thread(
            &alice,
            Some(&org),
            &[ParticipantEntry::listed(
                "participants",
                0,
                Some(ParticipantRef::Id(id(&bob).to_string())),
            )],
            "",
        )
        .await
        .unwrap();

    // Sends into the conversation and into a plain thread, all at once:
    // the message numbered first sets the summary, as if they had been
    // sent one by one, and the plain thread gets no chat record.
    let mut sends = tokio::task::JoinSet::new();
    for index in 0..16 {
        let threads = w.threads.clone();
        let sender = if index % 2 == 0 {
            alice.clone()
        } else {
            bob.clone()
        };
        let thread_id = if index % 4 == 3 {
            plain.id.clone()
        } else {
            id_of.clone()
        };
        sends.spawn(async move {
            let body = format!("Topic {index}\ndetails");
            threads
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
                .unwrap()
        });
    }
    let mut first: Option<agyn_threads::MessageRecord> = None;
    while let Some(sent) = sends.join_next().await {
        let sent = sent.unwrap();
        if sent.thread_id == id_of && first.as_ref().is_none_or(|first| sent.seq < first.seq) {
            first = Some(sent);
        }
    }
    let first = first.unwrap();
    assert_eq!(first.seq, 1);
    let expected = first.body.lines().next().unwrap().to_string();
    assert_eq!(w.summary(&alice, &id_of).await, Some(expected));
    let records: i64 = agyn_store::sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    assert_eq!(records, 1);
}

/// Makes every update of a chat record fail, the way a database error
/// fails the summary hook.
async fn fail_conversation_updates(w: &World, backend: Backend) {
    let pool = w.db.pool();
    match backend {
        Backend::Sqlite => {
            agyn_store::sqlx::query(
                "CREATE TRIGGER no_updates BEFORE UPDATE ON conversations \
                 BEGIN SELECT RAISE(ABORT, 'updates are disabled'); END",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            agyn_store::sqlx::query(
                "CREATE FUNCTION no_updates() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'updates are disabled'; END $$",
            )
            .execute(pool)
            .await
            .unwrap();
            agyn_store::sqlx::query(
                "CREATE TRIGGER no_updates BEFORE UPDATE ON conversations \
                 FOR EACH ROW EXECUTE FUNCTION no_updates()",
            )
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn failed_summary_keeps_the_send(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let conversation = w.create(&alice, &org, &[&bob], None).await.unwrap();
    let id_of = conversation.record.thread_id.clone();
    fail_conversation_updates(&w, backend).await;

    // The hook's update fails inside the send's transaction. Its
    // savepoint keeps the message, which is stored with its unacked row.
    let sent = w.send(&alice, &id_of, "Kick-off").await;
    assert_eq!(sent.seq, 1);
    assert_eq!(w.summary(&alice, &id_of).await, None);
    let (unacked, _) = w
        .threads
        .unacked_messages(&bob, Some(&id_of), 10, "")
        .await
        .unwrap();
    assert_eq!(unacked, vec![sent]);
    let thread = w.threads.get_thread(&bob, &id_of).await.unwrap();
    assert_eq!(thread.message_count, 1);
}

async fn non_participants_are_denied(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &alice).await;
    let conversation = w.create(&alice, &org, &[&bob], None).await.unwrap();
    let id_of = conversation.record.thread_id.clone();

    // The owner may read the thread, but chat is for participants only.
    assert!(w.threads.get_thread(&owner, &id_of).await.is_ok());
    for who in [&owner, &carol] {
        let error = w.chat.get_conversation(who, &id_of).await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.message(), "permission denied: participant on thread");
        let error = w
            .chat
            .update_conversation(who, &id_of, Some(Some(ConversationStatus::Closed)), None)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
        let error = w.chat.mark_read(who, &id_of, &[]).await.unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
    }
    let stored = w.chat.get_conversation(&bob, &id_of).await.unwrap();
    assert_eq!(stored.record.status, ConversationStatus::Open);

    // A thread without a chat record, or an unknown id, is not found.
    let plain = w
        .threads
        .create_thread(&alice, Some(&org), &[], "")
        .await
        .unwrap();
    for missing in [plain.id.clone(), agyn_core::id::new_id()] {
        let error = w.chat.get_conversation(&alice, &missing).await.unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), format!("conversation {missing} not found"));
        let error = w.chat.mark_read(&alice, &missing, &[]).await.unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
    }
    let error = w
        .chat
        .get_conversation(&Caller::Component("chat"), &id_of)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
}

async fn activity_follows_agent_backlog(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let agent = w.agent(&org, &alice).await;
    let conversation = w.create(&alice, &org, &[&agent], None).await.unwrap();
    let id_of = conversation.record.thread_id.clone();
    assert_eq!(conversation.activity, ActivityStatus::Finished);

    let message = w.send(&alice, &id_of, "Summarize the report").await;
    let seen = w.chat.get_conversation(&alice, &id_of).await.unwrap();
    assert_eq!(seen.activity, ActivityStatus::Pending);
    let (listed, _) = w
        .chat
        .list_conversations(&alice, &org, None, 0, "")
        .await
        .unwrap();
    assert_eq!(listed[0].activity, ActivityStatus::Pending);
    // The agent gets its own unread count too.
    let as_agent = w.chat.get_conversation(&agent, &id_of).await.unwrap();
    assert_eq!(as_agent.unread_count, 1);

    w.threads
        .ack_messages(&agent, &[message.id], None)
        .await
        .unwrap();
    let seen = w.chat.get_conversation(&alice, &id_of).await.unwrap();
    assert_eq!(seen.activity, ActivityStatus::Finished);

    // Closed threads and conversations without agents show no activity.
    w.send(&alice, &id_of, "One more").await;
    w.threads
        .degrade_thread(&Caller::Component("orchestrator"), &id_of, "operator")
        .await
        .unwrap();
    let seen = w.chat.get_conversation(&alice, &id_of).await.unwrap();
    assert_eq!(seen.activity, ActivityStatus::Unspecified);
    assert_eq!(seen.thread.status, ThreadStatus::Degraded);
    let bob = w.user("bob").await;
    let people = w.create(&alice, &org, &[&bob], None).await.unwrap();
    w.send(&alice, &people.record.thread_id, "hi").await;
    let seen = w
        .chat
        .get_conversation(&bob, &people.record.thread_id)
        .await
        .unwrap();
    assert_eq!(seen.activity, ActivityStatus::Unspecified);
}

async fn organization_purge_deletes_conversations(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let kept_org = w.org(&bob, "Kept").await;
    for _ in 0..3 {
        let conversation = w.create(&alice, &org, &[&bob], None).await.unwrap();
        w.send(&alice, &conversation.record.thread_id, "bye").await;
    }
    let kept = w.create(&bob, &kept_org, &[&alice], None).await.unwrap();

    w.orgs.delete_organization(&alice, &org).await.unwrap();
    let error = w.create(&alice, &org, &[&bob], None).await.unwrap_err();
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    w.orgs.purge(&org).await.unwrap();
    w.chat.delete_organization_resources(&org).await.unwrap();

    let row = agyn_store::sqlx::query("SELECT COUNT(*) AS n FROM conversations")
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    let remaining: i64 = agyn_store::sqlx::Row::try_get(&row, "n").unwrap();
    assert_eq!(remaining, 1);
    let stored = w
        .chat
        .get_conversation(&alice, &kept.record.thread_id)
        .await
        .unwrap();
    assert_eq!(stored.record.organization_id, kept_org);
}

on_both_backends!(
    conversation_lifecycle,
    create_is_idempotent_on_request_id,
    summary_hook_fills_absent_summary,
    summary_follows_first_concurrent_send,
    failed_summary_keeps_the_send,
    non_participants_are_denied,
    activity_follows_agent_backlog,
    organization_purge_deletes_conversations,
);
