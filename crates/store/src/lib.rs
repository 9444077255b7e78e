//! The platform database: one connection pool for SQLite (the default) or
//! PostgreSQL (scaled-out mode), and the schema migrations for both.
//!
//! Queries go through sqlx's `Any` driver with `$N` placeholders, which
//! both backends accept, so services write each statement once. Times are
//! stored as microseconds (`BIGINT`), ids as canonical UUID text and flags
//! as `0`/`1` integers, the types that read back the same on both.

pub mod idempotency;
mod migrations;
pub mod request_keys;
mod statement;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection as _, Executor};

pub use sqlx;
pub use statement::{Statement, execute_in_chunks};

/// How long a query waits for a free connection before the call fails
/// with `unavailable` (`database busy`).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Interval between two checkpoints of the SQLite write-ahead log. They
/// run on a reader connection, so that the writer does not wait for their
/// copying and `fsync`. Small checkpoints keep the writer's stalls short:
/// with 2 s between them, a write waited up to 30 ms for the pages of
/// the log that a checkpoint was still writing back.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// Size of the SQLite write-ahead log, in pages, at which the committing
/// connection checkpoints it itself. The background checkpoints keep the
/// log below it, so it matters only when they stop.
const AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Database engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors from opening the database.
#[derive(Debug)]
pub enum OpenError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    UnsupportedUrl(String),
    /// Another process has the SQLite database open.
    InUse(std::path::PathBuf),
    Connect(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
    Io(std::io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsupportedUrl(scheme) => write!(
                f,
                "unsupported database url scheme {scheme:?}: use sqlite://<path> or postgres://..."
            ),
            Self::Connect(error) => write!(f, "failed to connect to the database: {error}"),
            Self::Migrate(error) => write!(f, "failed to migrate the database: {error}"),
            Self::InUse(path) => write!(
                f,
                "database {} is in use by another agyn process; stop it or choose another --data-dir",
                path.display()
            ),
            Self::Io(error) => write!(f, "failed to prepare the database file: {error}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A shared pool of database connections.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// For SQLite, a pool of one connection that every [`Db::begin_write`]
    /// transaction uses, so that writers wait in process for their turn
    /// instead of sleeping in SQLite's busy handler. `None` for
    /// PostgreSQL, whose row locks let writers run side by side.
    writer: Option<AnyPool>,
    backend: Backend,
    /// For SQLite, the exclusive lock on `<database>.lock` that keeps a
    /// second process off the same file; released when the last clone
    /// drops.
    lock: Option<std::sync::Arc<std::fs::File>>,
    /// For SQLite, the task that checkpoints the write-ahead log, kept
    /// only so that it stops when the last clone drops.
    _checkpoints: Option<std::sync::Arc<Checkpoints>>,
}

/// Handle of the background checkpoint task, which it aborts when dropped.
#[derive(Debug)]
struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Db {
    /// Opens the database at `url`, creating a SQLite file and its parent
    /// directory when missing, and applies every pending migration.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let lock = match backend {
            Backend::Sqlite => lock_sqlite(url)?,
            Backend::Postgres => None,
        };
        let options = connect_options(url, backend).map_err(OpenError::Connect)?;
        let max_connections = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = connect_pool(&options, backend, max_connections).await?;
        migrations::run(&pool, backend)
            .await
            .map_err(OpenError::Migrate)?;
        let writer = match backend {
            // SQLite lets one transaction write at a time anyway.
            Backend::Sqlite => Some(connect_pool(&options, backend, 1).await?),
            Backend::Postgres => None,
        };
        let checkpoints = (backend == Backend::Sqlite).then(|| {
            let task = tokio::spawn(checkpoint_loop(pool.clone()));
            std::sync::Arc::new(Checkpoints(task.abort_handle()))
        });
        Ok(Self {
            pool,
            writer,
            backend,
            lock,
            _checkpoints: checkpoints,
        })
    }

    /// Returns true when this process is the only one using the database,
    /// so in-process caches of its rows stay coherent. Holds for SQLite,
    /// whose file is locked by [`Db::open`]; never for PostgreSQL, which
    /// several replicas share.
    pub fn is_exclusive(&self) -> bool {
        self.lock.is_some()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write.
    ///
    /// On SQLite it runs on the single writer connection, so concurrent
    /// writers wait in the pool's queue (up to [`ACQUIRE_TIMEOUT`]) and
    /// are woken when the previous transaction ends. It takes the write
    /// lock up front (`BEGIN IMMEDIATE`), because a deferred transaction
    /// that reads first would fail with `SQLITE_BUSY_SNAPSHOT` when a
    /// statement on another connection commits a write between its read
    /// and its write. Such autocommit writes through [`Db::pool`] still
    /// wait on `busy_timeout`.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        // sqlx opens a transaction in more than one awaited step, and a
        // caller dropped between them (a cancelled request) can leave the
        // connection inside a transaction that nothing rolls back. In its
        // own task the begin always finishes, and a transaction whose caller
        // has gone is dropped and rolled back.
        let begin = match &self.writer {
            Some(writer) => {
                let writer = writer.clone();
                tokio::spawn(async move { writer.begin_with("BEGIN IMMEDIATE").await })
            }
            None => {
                let pool = self.pool.clone();
                tokio::spawn(async move { pool.begin().await })
            }
        };
        begin.await.map_err(|error| {
            sqlx::Error::Io(std::io::Error::other(format!(
                "the task opening a write transaction failed: {error}"
            )))
        })?
    }

    /// Starts a transaction on the shared pool for reads that must see one
    /// snapshot. It must not write. Like [`Db::begin_write`], the begin runs in
    /// its own task, so a cancelled caller leaves no connection inside an
    /// open transaction.
    pub async fn begin_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|error| {
                sqlx::Error::Io(std::io::Error::other(format!(
                    "the task opening a read transaction failed: {error}"
                )))
            })?
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }

    /// Runs `SELECT 1`, for readiness probes.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Returns true when `error` is a violation of a unique or primary key
/// constraint, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.is_unique_violation(),
        _ => false,
    }
}

fn backend_of(url: &str) -> Result<Backend, OpenError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        other => Err(OpenError::UnsupportedUrl(other.to_string())),
    }
}

/// Opens a pool of up to `max_connections` connections with the session
/// settings of `backend`.
async fn connect_pool(
    options: &AnyConnectOptions,
    backend: Backend,
    max_connections: u32,
) -> Result<AnyPool, OpenError> {
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A SQLite connection lives in this process and cannot drop like
        // a network connection, so a ping before each use only costs a
        // round trip to its worker thread.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets readers run beside the single writer, and
                    // busy_timeout makes writes on other connections wait
                    // for the lock instead of failing.
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    connection.execute("PRAGMA busy_timeout = 5000").await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                    // Statement journals, which a statement writing many
                    // rows inside a transaction keeps, stay in memory
                    // instead of spilling to a temporary file.
                    connection.execute("PRAGMA temp_store = MEMORY").await?;
                    connection
                        .execute(
                            format!("PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}").as_str(),
                        )
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await;
    match pool {
        Ok(pool) => Ok(pool),
        // The pool reports only that it timed out; one direct attempt
        // surfaces the cause, such as a refused connection.
        Err(sqlx::Error::PoolTimedOut) => {
            let cause = match sqlx::AnyConnection::connect_with(options).await {
                Ok(_) => sqlx::Error::PoolTimedOut,
                Err(error) => error,
            };
            Err(OpenError::Connect(cause))
        }
        Err(error) => Err(OpenError::Connect(error)),
    }
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_INTERVAL`] until
/// the pool closes. A passive checkpoint copies what it can without
/// waiting for readers or the writer, and the next write transaction
/// restarts the log from its beginning once all of it is copied.
async fn checkpoint_loop(pool: AnyPool) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u64;
    loop {
        ticks.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            failures += 1;
            // The first failure and then every hundredth are logged.
            if failures == 1 || failures.is_multiple_of(100) {
                tracing::warn!(%error, failures, "Failed to checkpoint the SQLite write-ahead log");
            }
        }
    }
}

fn connect_options(url: &str, backend: Backend) -> Result<AnyConnectOptions, sqlx::Error> {
    let url = if backend == Backend::Sqlite && !url.contains('?') {
        format!("{url}?mode=rwc")
    } else {
        url.to_string()
    };
    AnyConnectOptions::from_str(&url)
}

/// Creates the SQLite file's directory and takes an exclusive lock on
/// `<file>.lock`. In-memory databases need neither.
fn lock_sqlite(url: &str) -> Result<Option<std::sync::Arc<std::fs::File>>, OpenError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(None);
    }
    let path = Path::new(path);
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(OpenError::Io)?;
    }
    // SQLite creates the -wal and -shm files with the database file's
    // mode, so creating it readable by its owner only covers all three.
    let mut create = std::fs::OpenOptions::new();
    create.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        create.mode(0o600);
    }
    create.open(path).map_err(OpenError::Io)?;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(OpenError::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(std::sync::Arc::new(file))),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(OpenError::Io(error)),
    }
}

/// Runs each named `async fn(Backend)` as two tests, `<name>::sqlite`
/// and `<name>::postgres`, on a multi-threaded runtime.
#[cfg(feature = "testing")]
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$test($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$test($crate::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Fresh databases for tests, one per call, on either backend.
#[cfg(feature = "testing")]
pub mod testing {
    use super::{Backend, Db};
    use sqlx::Executor;
    use sqlx::any::AnyPoolOptions;

    /// Server used by PostgreSQL tests unless `AGYN_TEST_POSTGRES_URL`
    /// names another; the tests create one database per call on it.
    pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// Opens a new, empty, migrated database on `backend`.
    ///
    /// SQLite databases are files under the system temp directory.
    /// PostgreSQL databases are created as `agyn_test_<uuid>` on the
    /// server at `AGYN_TEST_POSTGRES_URL` and are not dropped, so that a
    /// failed test can be inspected.
    pub async fn fresh(backend: Backend) -> Db {
        let url = match backend {
            Backend::Sqlite => {
                let name = format!("agyn_test_{}", uuid::Uuid::new_v4().simple());
                let path = std::env::temp_dir().join(format!("{name}.db"));
                format!("sqlite://{}", path.display())
            }
            Backend::Postgres => fresh_postgres_url().await,
        };
        Db::open(&url).await.expect("open the test database")
    }

    /// Creates an empty database `agyn_test_<uuid>` on the server at
    /// `AGYN_TEST_POSTGRES_URL` and returns its URL, for tests that hand
    /// the URL to a server process.
    pub async fn fresh_postgres_url() -> String {
        let name = format!("agyn_test_{}", uuid::Uuid::new_v4().simple());
        let server = std::env::var("AGYN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL tests need a server at {server}: {error}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        admin.close().await;
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_open_of_sqlite_file_is_rejected() {
        let path = std::env::temp_dir().join(format!("agyn-lock-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let first = Db::open(&url).await.unwrap();
        assert!(first.is_exclusive());
        let error = Db::open(&url).await.unwrap_err();
        assert!(matches!(error, OpenError::InUse(_)), "{error}");
        assert!(error.to_string().contains("in use by another agyn process"));
        first.close().await;
        drop(first);
        let again = Db::open(&url).await.unwrap();
        again.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_begin_leaves_writer_usable() {
        let path = std::env::temp_dir().join(format!("agyn-cancel-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&url).await.unwrap();

        // A caller that gives up while its write transaction is being
        // opened, as a cancelled request does, must not leave the writer
        // connection inside a transaction.
        for round in 0..200 {
            let _ = tokio::time::timeout(Duration::ZERO, db.begin_write()).await;
            let next = tokio::time::timeout(Duration::from_secs(5), db.begin_write())
                .await
                .unwrap_or_else(|_| panic!("round {round}: begin_write timed out"));
            let tx = next.unwrap_or_else(|error| panic!("round {round}: {error}"));
            tx.commit().await.unwrap();
        }

        db.close().await;
        drop(db);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunked_insert_stores_every_row() {
        let path = std::env::temp_dir().join(format!("agyn-chunks-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE pairs (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(db.pool())
            .await
            .unwrap();

        // Five rows, two a statement: three statements.
        let rows: Vec<(i64, String)> = (1..=5).map(|id| (id, format!("row {id}"))).collect();
        let mut statements = 0;
        let mut connection = db.pool().acquire().await.unwrap();
        execute_in_chunks(
            &mut connection,
            db.backend(),
            "INSERT INTO pairs (id, name) VALUES ",
            &rows,
            2,
            |statement, chunk| {
                statements += 1;
                let tuples: Vec<String> = chunk
                    .iter()
                    .map(|(id, name)| {
                        let id = statement.integer(*id);
                        let name = statement.text(name);
                        format!("({id}, {name})")
                    })
                    .collect();
                tuples.join(", ")
            },
        )
        .await
        .unwrap();
        drop(connection);
        assert_eq!(statements, 3);

        let stored: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM pairs ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(stored, rows);
        db.close().await;
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writers_take_turns() {
        let path = std::env::temp_dir().join(format!("agyn-writers-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE counter (id BIGINT PRIMARY KEY, value BIGINT NOT NULL)")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO counter (id, value) VALUES (1, 0)")
            .execute(db.pool())
            .await
            .unwrap();

        // Each writer reads, yields while holding its transaction, and
        // writes. A lost update or a busy error fails the test.
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let db = db.clone();
            writers.spawn(async move {
                let mut tx = db.begin_write().await?;
                let value: i64 = sqlx::query_scalar("SELECT value FROM counter WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                tokio::task::yield_now().await;
                sqlx::query("UPDATE counter SET value = $1 WHERE id = 1")
                    .bind(value + 1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            });
        }
        while let Some(result) = writers.join_next().await {
            result.unwrap().unwrap();
        }

        // A write transaction left open does not block readers.
        let open = db.begin_write().await.unwrap();
        let value: i64 = sqlx::query_scalar("SELECT value FROM counter WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(value, 32);
        drop(open);

        db.close().await;
        drop(db);
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    /// Reads the checkpoint sequence number from a write-ahead log's
    /// header (bytes 12 to 15, big-endian), which grows by one each time
    /// a write restarts the log.
    fn checkpoint_sequence(wal: &Path) -> u32 {
        let header = std::fs::read(wal).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_log_is_checkpointed_in_background() {
        let path = std::env::temp_dir().join(format!("agyn-wal-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE rows (id BIGINT PRIMARY KEY)")
            .execute(db.pool())
            .await
            .unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        let first = checkpoint_sequence(&wal);

        // A write restarts the log only after a checkpoint has copied all
        // of it, and these few writes stay far below the size at which a
        // writer checkpoints by itself.
        let mut restarted = false;
        for id in 0..100i64 {
            let mut tx = db.begin_write().await.unwrap();
            sqlx::query("INSERT INTO rows (id) VALUES ($1)")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            if checkpoint_sequence(&wal) != first {
                restarted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(restarted, "no checkpoint in 10 s of writes");

        db.close().await;
        drop(db);
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    #[tokio::test]
    async fn unsupported_scheme_is_rejected() {
        let error = Db::open("mysql://localhost/x").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "unsupported database url scheme \"mysql\": use sqlite://<path> or postgres://..."
        );
    }
}
