//! The replay log: `notification_log` and its room index.

use agyn_core::{Error, Result};
use agyn_store::sqlx::{self, AnyConnection, Row as _, any::AnyRow};
use agyn_store::{Db, Statement, execute_in_chunks};

use crate::{Envelope, GapReason, MAX_REPLAY, REPLAY_LOOKBACK, Replay};

/// Maximum rows in one multi-row INSERT. At seven bind parameters a row
/// it stays below the limits of SQLite (32,766) and PostgreSQL (65,535).
const MAX_ROWS_PER_INSERT: usize = 500;

/// Appends `envelopes` on SQLite, in one transaction with one INSERT per
/// table for every [`MAX_ROWS_PER_INSERT`] rows, and returns their
/// `seq`s, in order. PostgreSQL has [`append_postgres`].
pub async fn append_sqlite(db: &Db, envelopes: &[Envelope]) -> Result<Vec<i64>> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(envelopes.len()).expect("a batch fits in i64");
    let mut tx = db.begin_write().await?;

    // Reserve `count` seqs. The row stays locked until commit, so the
    // next batch waits and takes higher seqs.
    let last: i64 = sqlx::query(
        "UPDATE notification_sequence SET last_value = last_value + $1 \
         WHERE name = 'notification_log' RETURNING last_value",
    )
    .bind(count)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;

    let seqs: Vec<i64> = (last - count + 1..=last).collect();
    let numbered: Vec<(&Envelope, i64)> = envelopes.iter().zip(seqs.iter().copied()).collect();
    execute_in_chunks(
        &mut tx,
        db.backend(),
        "INSERT INTO notification_log (seq, id, ts, source, event, rooms, payload) VALUES ",
        &numbered,
        MAX_ROWS_PER_INSERT,
        log_values,
    )
    .await?;

    let room_rows: Vec<(&str, i64)> = numbered
        .iter()
        .flat_map(|(envelope, seq)| envelope.rooms.iter().map(|room| (room.as_str(), *seq)))
        .collect();
    execute_in_chunks(
        &mut tx,
        db.backend(),
        "INSERT INTO notification_log_rooms (room, seq) VALUES ",
        &room_rows,
        MAX_ROWS_PER_INSERT,
        room_values,
    )
    .await?;

    tx.commit().await?;
    Ok(seqs)
}

/// Adds the arguments of `rows` and returns their `VALUES` tuples for
/// `notification_log`.
fn log_values(statement: &mut Statement, rows: &[(&Envelope, i64)]) -> String {
    let mut tuples = Vec::with_capacity(rows.len());
    for (envelope, seq) in rows {
        let rooms = serde_json::to_string(&envelope.rooms).expect("room names encode as JSON");
        let payload = serde_json::to_string(&envelope.payload).expect("a JSON map encodes");
        let seq = statement.integer(*seq);
        let id = statement.text(&envelope.id);
        let ts = statement.integer(envelope.ts);
        let source = statement.text(&envelope.source);
        let event = statement.text(&envelope.event);
        let rooms = statement.text(&rooms);
        let payload = statement.text(&payload);
        tuples.push(format!(
            "({seq}, {id}, {ts}, {source}, {event}, {rooms}, {payload})"
        ));
    }
    tuples.join(", ")
}

/// Adds the arguments of `rows` and returns their `VALUES` tuples for
/// `notification_log_rooms`.
fn room_values(statement: &mut Statement, rows: &[(&str, i64)]) -> String {
    let mut tuples = Vec::with_capacity(rows.len());
    for (room, seq) in rows {
        let room = statement.text(room);
        let seq = statement.integer(*seq);
        tuples.push(format!("({room}, {seq})"));
    }
    tuples.join(", ")
}

/// Appends `envelopes` on PostgreSQL with one statement and returns their
/// `seq`s, in order.
///
/// The batch travels as one JSON argument, so the SQL text never changes:
/// the server plans it once per connection, and each batch costs one
/// round trip whatever its size. The statement is its own transaction.
/// It reserves the seqs by updating the counter row, which stays locked
/// until the statement commits, so concurrent batches, also from other
/// replicas, commit in `seq` order.
///
/// The log only serves resumes, and delivery waits for its commit, so the
/// statement turns `synchronous_commit` off for its own transaction and
/// the commit does not wait for the write-ahead log to reach the disk. A
/// crash can then lose the last envelopes. A resume from one of them
/// finds no cursor and reports a gap.
pub async fn append_postgres(
    connection: &mut AnyConnection,
    envelopes: &[Envelope],
) -> Result<Vec<i64>> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(envelopes.len()).expect("a batch fits in i64");
    let rows: Vec<serde_json::Value> = envelopes
        .iter()
        .enumerate()
        .map(|(index, envelope)| {
            serde_json::json!({
                "ord": index + 1,
                "id": envelope.id,
                "ts": envelope.ts,
                "source": envelope.source,
                "event": envelope.event,
                // Stored as the same JSON text as on SQLite, not in the
                // normalized form of a jsonb value.
                "rooms": serde_json::to_string(&envelope.rooms).expect("room names encode as JSON"),
                "payload": serde_json::to_string(&envelope.payload).expect("a JSON map encodes"),
            })
        })
        .collect();
    let batch = serde_json::to_string(&rows).expect("a JSON array encodes");
    let first: i64 = sqlx::query(APPEND_POSTGRES)
        .bind(count)
        .bind(batch)
        .fetch_one(connection)
        .await?
        .try_get(0)?;
    Ok((first..first + count).collect())
}

/// Statement of [`append_postgres`]. `$1` is the number of envelopes, and
/// `$2` a JSON array of them, numbered from 1 by `ord`. Returns the first
/// reserved seq. Foreign keys are checked at the end of the statement, so
/// the room rows may refer to log rows inserted beside them. The final
/// SELECT reads `no_flush`, because a `WITH` query that only reads runs
/// only when referenced.
const APPEND_POSTGRES: &str = "\
WITH no_flush AS (
    SELECT set_config('synchronous_commit', 'off', true) AS value
), reserved AS (
    UPDATE notification_sequence SET last_value = last_value + $1
    WHERE name = 'notification_log'
    RETURNING last_value - $1 AS base
), batch AS (
    SELECT * FROM jsonb_to_recordset($2::text::jsonb)
        AS b(ord BIGINT, id TEXT, ts BIGINT, source TEXT, event TEXT, rooms TEXT, payload TEXT)
), logged AS (
    INSERT INTO notification_log (seq, id, ts, source, event, rooms, payload)
    SELECT reserved.base + batch.ord, batch.id, batch.ts, batch.source, batch.event,
           batch.rooms, batch.payload
    FROM reserved, batch
), indexed AS (
    INSERT INTO notification_log_rooms (room, seq)
    SELECT room, reserved.base + batch.ord
    FROM reserved, batch, jsonb_array_elements_text(batch.rooms::jsonb) AS room
)
SELECT reserved.base + 1 FROM reserved, no_flush";

/// Reads what a stream of `rooms` resuming after envelope `cursor_id`
/// missed. See [`crate::Events::replay`].
/// `dropped_at` is the time this replica last dropped an envelope: a
/// replay whose window reaches it is a gap, because the dropped envelopes
/// were never logged.
pub async fn replay(
    db: &Db,
    rooms: &[String],
    cursor_id: &str,
    dropped_at: Option<i64>,
) -> Result<Replay> {
    let Some(cursor) = sqlx::query("SELECT seq, ts, rooms FROM notification_log WHERE id = $1")
        .bind(cursor_id)
        .fetch_optional(db.pool())
        .await?
    else {
        return Ok(Replay::Gap(GapReason::CursorNotFound));
    };
    let cursor_seq: i64 = cursor.try_get("seq")?;
    let cursor_ts: i64 = cursor.try_get("ts")?;
    let cursor_rooms: String = cursor.try_get("rooms")?;
    let cursor_rooms: Vec<String> = serde_json::from_str(&cursor_rooms)
        .map_err(|error| Error::internal("notification_log.rooms is not a JSON array", error))?;
    // A cursor that the stream could not have received counts as unknown,
    // so a stream learns nothing about envelopes of other rooms.
    if !cursor_rooms.iter().any(|room| rooms.contains(room)) {
        return Ok(Replay::Gap(GapReason::CursorNotFound));
    }
    let window_start = cursor_ts - i64::try_from(REPLAY_LOOKBACK.as_micros()).unwrap_or(i64::MAX);
    if dropped_at.is_some_and(|at| at >= window_start) {
        return Ok(Replay::Gap(GapReason::EventsDropped));
    }
    // The lowest seq worth reading, so that the room index is scanned
    // from there on instead of from its start.
    let lowest_in_window: Option<i64> =
        sqlx::query("SELECT MIN(seq) FROM notification_log WHERE ts >= $1")
            .bind(window_start)
            .fetch_one(db.pool())
            .await?
            .try_get(0)?;
    let lower = lowest_in_window.map_or(cursor_seq, |seq| seq.min(cursor_seq));

    let room_placeholders: Vec<String> = (0..rooms.len()).map(|i| format!("${}", i + 5)).collect();
    let sql = format!(
        "SELECT seq, id, ts, source, event, rooms, payload FROM notification_log \
         WHERE seq IN (SELECT seq FROM notification_log_rooms \
                       WHERE seq >= $1 AND room IN ({})) \
           AND seq <> $2 AND (seq > $2 OR ts >= $3) \
         ORDER BY seq LIMIT $4",
        room_placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(lower)
        .bind(cursor_seq)
        .bind(window_start)
        .bind(i64::try_from(MAX_REPLAY).expect("the replay limit fits in i64") + 1);
    for room in rooms {
        query = query.bind(room);
    }
    let rows = query.fetch_all(db.pool()).await?;
    if rows.len() > MAX_REPLAY {
        return Ok(Replay::Gap(GapReason::ReplayLimitExceeded));
    }
    let envelopes = rows.iter().map(envelope).collect::<Result<Vec<_>>>()?;
    Ok(Replay::Resumed(envelopes))
}

/// Deletes the envelopes accepted before `cutoff` (microseconds since the
/// Unix epoch) and returns how many.
pub async fn prune(db: &Db, cutoff: i64) -> Result<u64> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "DELETE FROM notification_log_rooms \
         WHERE seq IN (SELECT seq FROM notification_log WHERE ts < $1)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    let deleted = sqlx::query("DELETE FROM notification_log WHERE ts < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

fn envelope(row: &AnyRow) -> Result<Envelope> {
    let rooms: String = row.try_get("rooms")?;
    let payload: String = row.try_get("payload")?;
    Ok(Envelope {
        id: row.try_get("id")?,
        ts: row.try_get("ts")?,
        source: row.try_get("source")?,
        event: row.try_get("event")?,
        rooms: serde_json::from_str(&rooms).map_err(|error| {
            Error::internal("notification_log.rooms is not a JSON array", error)
        })?,
        payload: serde_json::from_str(&payload).map_err(|error| {
            Error::internal("notification_log.payload is not a JSON object", error)
        })?,
    })
}
