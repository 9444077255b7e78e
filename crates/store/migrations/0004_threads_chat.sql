-- Threads, their participants, messages, per-recipient read state and
-- chat conversations. Times are microseconds since the Unix epoch (UTC).

-- `status` is `active`, `archived` or `degraded`; `degrade_reason` is empty
-- unless degraded. Messages are never deleted one by one, so the newest
-- message's sequence number equals `message_count`.
CREATE TABLE threads (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    degrade_reason  TEXT NOT NULL DEFAULT '',
    message_count   BIGINT NOT NULL DEFAULT 0,
    last_message_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX threads_by_org ON threads (organization_id, created_at, id);

-- `identity_type` is `user`, `agent` or `app`; `passive` is 0 or 1.
-- Participants are never removed while their thread exists.
CREATE TABLE thread_participants (
    thread_id      TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    identity_type  TEXT NOT NULL,
    passive        BIGINT NOT NULL DEFAULT 0,
    joined_at      BIGINT NOT NULL,
    PRIMARY KEY (thread_id, participant_id)
);

CREATE INDEX thread_participants_by_participant ON thread_participants (participant_id, thread_id);

-- Immutable messages; `seq` counts from 1 within the thread.
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    thread_id  TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    sender_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (thread_id, seq)
);

-- Attached file ids in the order sent (`ord` from 0); duplicates are kept.
CREATE TABLE message_files (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    ord        BIGINT NOT NULL,
    file_id    TEXT NOT NULL,
    PRIMARY KEY (message_id, ord)
);

CREATE INDEX message_files_by_file ON message_files (file_id);

-- One row per message and participant other than the sender. `thread_id`,
-- `created_at` and `seq` copy the message's so that unacked lists and
-- counts read this table alone.
CREATE TABLE message_recipients (
    message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    thread_id        TEXT NOT NULL,
    participant_id   TEXT NOT NULL,
    participant_type TEXT NOT NULL,
    acked_at         BIGINT,
    created_at       BIGINT NOT NULL,
    seq              BIGINT NOT NULL,
    PRIMARY KEY (message_id, participant_id)
);

CREATE INDEX message_recipients_by_thread ON message_recipients (thread_id);
CREATE INDEX message_recipients_unacked ON message_recipients (participant_id, thread_id, seq)
    WHERE acked_at IS NULL;
CREATE INDEX message_recipients_unacked_by_time
    ON message_recipients (participant_id, created_at, thread_id, seq)
    WHERE acked_at IS NULL;
CREATE INDEX message_recipients_agent_backlog
    ON message_recipients (thread_id, participant_id, created_at)
    WHERE acked_at IS NULL AND participant_type = 'agent';

-- The chat record of a thread. `status` is `open` or `closed`; a NULL
-- `summary` was never set.
CREATE TABLE conversations (
    thread_id       TEXT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    summary         TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX conversations_by_org ON conversations (organization_id, created_at, thread_id);
