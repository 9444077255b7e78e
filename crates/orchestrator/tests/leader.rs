//! Leader election. With SQLite the process always leads. With
//! PostgreSQL exactly one of two replicas on one database leads, and its
//! singleton jobs run only there. The other replica takes over within
//! seconds when the leader's lock connection fails or the leader goes
//! away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agyn_orchestrator::leader::LOCK_KEY;
use agyn_orchestrator::{Leadership, run_while_leader};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};

/// Spawns a singleton job that counts its ticks, and returns the count.
fn counting_job(leadership: &Leadership) -> Arc<AtomicU64> {
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&ticks);
    tokio::spawn(run_while_leader(
        "counter",
        leadership.subscribe(),
        move || {
            let counter = Arc::clone(&counter);
            async move {
                loop {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        },
    ));
    ticks
}

/// Waits up to `limit` for `condition`; returns how long it took.
async fn wait_until(limit: Duration, description: &str, condition: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "{description} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Asserts that the count does not move for a while.
async fn assert_stays(ticks: &AtomicU64, description: &str) {
    let before = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), before, "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_process_always_leads() {
    let db = agyn_store::testing::fresh(Backend::Sqlite).await;
    let leadership = Leadership::start(&db);
    assert!(leadership.is_leader());
    let ticks = counting_job(&leadership);
    wait_until(Duration::from_secs(5), "the job start", || {
        ticks.load(Ordering::SeqCst) > 0
    })
    .await;
    drop(leadership);
    // Ending the election stops the job.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_stays(&ticks, "the job ran after the election ended").await;
}

/// Returns the backend pid of the session that holds the leader lock.
async fn lock_holder(db: &Db) -> Option<i64> {
    let row = sqlx::query(
        "SELECT pid::BIGINT AS pid FROM pg_locks \
         WHERE locktype = 'advisory' AND objid = $1 AND granted",
    )
    .bind(LOCK_KEY)
    .fetch_optional(db.pool())
    .await
    .unwrap()?;
    Some(row.try_get("pid").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_elect_one_leader_and_hand_over() {
    let url = agyn_store::testing::fresh_postgres_url().await;
    let first_db = Db::open(&url).await.unwrap();
    let second_db = Db::open(&url).await.unwrap();
    let first = Leadership::start(&first_db);
    let second = Leadership::start(&second_db);
    let first_ticks = counting_job(&first);
    let second_ticks = counting_job(&second);

    wait_until(Duration::from_secs(7), "a leader", || {
        first.is_leader() || second.is_leader()
    })
    .await;
    // Past the 5 s retry interval, the other replica still does not lead.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(first.is_leader() != second.is_leader());
    let (leader, follower, leader_ticks, follower_ticks) = if first.is_leader() {
        (first, second, first_ticks, second_ticks)
    } else {
        (second, first, second_ticks, first_ticks)
    };
    assert!(leader_ticks.load(Ordering::SeqCst) > 0);
    assert_eq!(follower_ticks.load(Ordering::SeqCst), 0);

    // The database ends the leader's lock session.
    let pid = lock_holder(&first_db)
        .await
        .expect("a session holds the lock");
    sqlx::query("SELECT pg_terminate_backend(CAST($1 AS INTEGER))")
        .bind(pid)
        .execute(first_db.pool())
        .await
        .unwrap();
    let dropped = wait_until(
        Duration::from_secs(5),
        "the old leader stepping down",
        || !leader.is_leader(),
    )
    .await;
    assert!(dropped <= Duration::from_secs(5), "{dropped:?}");
    wait_until(Duration::from_secs(7), "the follower taking over", || {
        follower.is_leader()
    })
    .await;
    assert_stays(&leader_ticks, "the old leader's job kept running").await;
    wait_until(Duration::from_secs(2), "the new leader's job", || {
        follower_ticks.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(!leader.is_leader());

    // The new leader goes away; the first replica leads again.
    drop(follower);
    wait_until(
        Duration::from_secs(7),
        "the first replica leading again",
        || leader.is_leader(),
    )
    .await;
    let holder = lock_holder(&first_db).await;
    assert!(holder.is_some());
    assert_ne!(holder, Some(pid));
}
