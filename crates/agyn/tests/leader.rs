//! Two `agyn serve` replicas on one PostgreSQL database and one Redis:
//! exactly one becomes the leader, and when it is killed the other takes
//! over within seconds.

mod support;

use std::time::{Duration, Instant};

use support::Server;

/// The line a replica logs when it becomes the leader.
const LEADER_LINE: &str = "This replica is the leader";

fn redis_url() -> String {
    std::env::var("AGYN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

fn leads(server: &Server) -> bool {
    server.log().contains(LEADER_LINE)
}

#[tokio::test]
async fn killed_leader_hands_over_to_replica() {
    let args = vec![
        "--database-url".to_string(),
        support::fresh_postgres_url().await,
        "--redis-url".to_string(),
        redis_url(),
        // Both replicas must open the CA stored in the shared database.
        "--master-key".to_string(),
        agyn_pki::MasterKey::generate().to_base64(),
    ];
    let first = Server::start_with(&args);
    let second = Server::start_replica(&args);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !leads(&first) && !leads(&second) {
        assert!(
            Instant::now() < deadline,
            "no replica became the leader:\n{}\n---\n{}",
            first.log(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the 5 s retry interval, the other replica still does not lead.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        leads(&first) != leads(&second),
        "both replicas lead:\n{}\n---\n{}",
        first.log(),
        second.log()
    );
    let (mut leader, follower) = if leads(&first) {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        leader.log().contains("Singleton job started on the leader"),
        "{}",
        leader.log()
    );
    assert!(
        !follower.log().contains("Singleton job started"),
        "{}",
        follower.log()
    );

    leader.signal("KILL");
    assert!(leader.wait_exit(Duration::from_secs(5)).is_some());
    let killed_at = Instant::now();
    while !leads(&follower) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "the replica did not take over within 10 s:\n{}",
            follower.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !follower
        .log()
        .contains("Singleton job started on the leader")
    {
        assert!(Instant::now() < deadline, "{}", follower.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let data_dirs = [leader.data_dir.clone(), follower.data_dir.clone()];
    drop(leader);
    drop(follower);
    for dir in data_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
