-- The replay log of the event bus.
--
-- `seq` orders the log and is what resume cursors compare. It is taken
-- from `notification_sequence` inside the inserting transaction rather
-- than from an autoincrement column, because SQLite and PostgreSQL share
-- no autoincrement syntax. The counter row stays locked until that
-- transaction commits, so rows commit in `seq` order on both backends.
CREATE TABLE notification_sequence (
    name TEXT PRIMARY KEY,
    last_value BIGINT NOT NULL
);

INSERT INTO notification_sequence (name, last_value) VALUES ('notification_log', 0);

CREATE TABLE notification_log (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- Microseconds since the Unix epoch when the bus accepted the envelope.
    ts BIGINT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    -- JSON array of room names.
    rooms TEXT NOT NULL,
    -- JSON object.
    payload TEXT NOT NULL
);

CREATE INDEX notification_log_ts ON notification_log (ts);

-- One row per room of an envelope, so that a replay reads only the rooms
-- of its stream.
CREATE TABLE notification_log_rooms (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL REFERENCES notification_log (seq) ON DELETE CASCADE,
    PRIMARY KEY (room, seq)
);

CREATE INDEX notification_log_rooms_seq ON notification_log_rooms (seq);
