//! The hook server over real HTTP, running real `/bin/sh` functions.

use std::path::Path;
use std::time::{Duration, Instant};

use agyn_launch::hook::{self, HookSettings, TAIL_BYTES};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Maximum wait for a process to end.
const WAIT: Duration = Duration::from_secs(15);

/// A hook server on a free loopback port, stopped on drop.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(function: &str, timeout: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let settings = HookSettings {
            function: function.to_string(),
            timeout,
        };
        let task = tokio::spawn(hook::serve(listener, settings, async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            task,
        }
    }

    async fn run(&self, body: &Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/run", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn payload(event: &str) -> Value {
    json!({
        "event": event,
        "agent_id": "agent-1",
        "thread_id": "thread-1",
        "workload_id": "workload-1",
        "message_ids": ["m-1", "m-2"],
        "reply_message_id": "m-3",
    })
}

/// Waits until no live process has the pid written to `file`.
async fn wait_gone(file: &Path) {
    let pid = std::fs::read_to_string(file).unwrap().trim().to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().next().map(str::to_string)
            });
        if !matches!(state.as_deref(), Some(state) if state != "Z" && state != "X") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hook_runs_function_with_payload() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let function = format!(
        "cat > '{}'; echo \"event=$HOOK_EVENT\"; echo warning >&2; exit 3",
        input.display()
    );
    let server = Server::start(&function, Duration::from_secs(30)).await;
    let body = payload("turn_end");
    let outcome = server.run(&body).await;
    assert_eq!(outcome["exit_code"], 3);
    assert_eq!(outcome["timed_out"], false);
    assert_eq!(outcome["stdout_tail"], "event=turn_end\n");
    assert_eq!(outcome["stderr_tail"], "warning\n");
    let received: Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
    assert_eq!(received, body);
    let mut keys: Vec<&str> = outcome
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["exit_code", "stderr_tail", "stdout_tail", "timed_out"]
    );
}

#[tokio::test]
async fn hook_kills_function_after_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sleep.pid");
    let function = format!(
        "echo started; sleep 30 & echo $! > '{}'; wait",
        pid_file.display()
    );
    let server = Server::start(&function, Duration::from_millis(500)).await;
    let outcome = server.run(&payload("turn_start")).await;
    assert_eq!(outcome["timed_out"], true);
    assert_eq!(outcome["exit_code"], 128 + 9);
    assert_eq!(outcome["stdout_tail"], "started\n");
    wait_gone(&pid_file).await;
}

#[tokio::test]
async fn hook_ends_leftover_processes() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sleep.pid");
    let function = format!("sleep 30 & echo $! > '{}'; echo done", pid_file.display());
    let server = Server::start(&function, Duration::from_secs(60)).await;
    let outcome = server.run(&payload("workload_start")).await;
    assert_eq!(outcome["timed_out"], false);
    assert_eq!(outcome["exit_code"], 0);
    assert_eq!(outcome["stdout_tail"], "done\n");
    wait_gone(&pid_file).await;
}

#[tokio::test]
async fn hook_keeps_last_bytes_of_output() {
    let function =
        "head -c 10000 /dev/zero | tr '\\0' a; echo END; head -c 9000 /dev/zero | tr '\\0' b >&2";
    let server = Server::start(function, Duration::from_secs(30)).await;
    let outcome = server.run(&payload("turn_end")).await;
    let stdout = outcome["stdout_tail"].as_str().unwrap();
    assert_eq!(stdout.len(), TAIL_BYTES);
    assert!(stdout.ends_with("aaaEND\n"), "{stdout}");
    let stderr = outcome["stderr_tail"].as_str().unwrap();
    assert_eq!(stderr, "b".repeat(TAIL_BYTES));
}

#[test]
fn tail_text_cuts_at_character() {
    // "€" is three bytes, so the raw 4 KiB cut of 6,000 bytes falls
    // inside one.
    let bytes = "€".repeat(2000).into_bytes();
    let tail = hook::tail_text(&bytes);
    assert!(tail.chars().all(|c| c == '€'), "{tail}");
    assert_eq!(tail.len(), TAIL_BYTES - 1);

    let invalid = vec![0xFFu8; 5000];
    let tail = hook::tail_text(&invalid);
    assert!(tail.len() <= TAIL_BYTES, "{}", tail.len());
    assert!(tail.chars().all(|c| c == '\u{FFFD}'));

    assert_eq!(hook::tail_text(b"short"), "short");
}

#[tokio::test]
async fn hook_rejects_bad_requests() {
    let server = Server::start("true", Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/run", server.url);

    let response = client.post(&url).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not JSON"),
        "{body}"
    );

    let response = client
        .post(&url)
        .json(&json!({ "agent_id": "a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("event"), "{body}");

    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let response = client
        .post(format!("{}/other", server.url))
        .json(&payload("turn_end"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn hook_server_stops_on_shutdown() {
    let mut server = Server::start("true", Duration::from_secs(30)).await;
    let outcome = server.run(&payload("turn_end")).await;
    assert_eq!(outcome["exit_code"], 0);
    server.stop.take().unwrap().send(()).unwrap();
    let task = &mut server.task;
    let result = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}
