//! Runs the Quickstart of README.md as written, against a real `agyn
//! serve` with its built-in runner.
//!
//! The `sh` blocks under the Quickstart's headings run with `bash -euo
//! pipefail` in one script, so variables carry over as in the reader's
//! terminal. The steps differ from the reader's in two documented ways:
//!
//! - The "Start the platform" block does not run. The test starts `agyn
//!   serve` with its own data directory and loopback ports, and puts the
//!   binary under test first on PATH. It checks that the block still
//!   contains exactly those two steps.
//! - The OpenAI block runs up to its first `agyn send`, the only line that
//!   reaches the network, with a made-up key in OPENAI_API_KEY.
//!
//! The blocks read the server's location from AGYN_DATA_DIR and
//! AGYN_GATEWAY_URL, which the test sets. Everything else in the script's
//! environment is cleared, and HOME is a scratch directory.

mod support;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, canary, connect_json};

const SECTION: &str = "## Quickstart";
const START_HEADING: &str = "### Start the platform";
const SCRIPTED_HEADING: &str = "### Talk to a scripted agent";
const OPENAI_HEADING: &str = "### With an OpenAI model";

/// The commands of the start block, which the test replaces with its own
/// server and PATH.
const START_COMMANDS: [&str; 2] = [
    "cargo run --release -p agyn -- serve",
    r#"export PATH="$PWD/target/release:$PATH""#,
];

/// Maximum run time of the whole script. `send --wait` alone may take
/// 120 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// A fenced code block: its info string and its text.
struct Fence {
    info: String,
    body: String,
}

/// Returns the text under `heading` up to the next heading of the same
/// or a higher level. Lines inside code fences are never headings.
fn section(markdown: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = Vec::new();
    let mut inside = false;
    let mut in_fence = false;
    for line in markdown.lines() {
        if !in_fence && line.starts_with('#') {
            let this_level = line.chars().take_while(|c| *c == '#').count();
            if inside && this_level <= level {
                break;
            }
            if line.trim_end() == heading {
                assert!(!inside, "README.md has {heading:?} twice");
                inside = true;
                continue;
            }
        }
        if line.starts_with("```") {
            in_fence = !in_fence;
        }
        if inside {
            lines.push(line);
        }
    }
    assert!(inside, "README.md has no heading {heading:?}");
    lines.join("\n")
}

/// Returns the fenced code blocks in `markdown`, in order.
fn fences(markdown: &str) -> Vec<Fence> {
    let mut found = Vec::new();
    let mut open: Option<Fence> = None;
    for line in markdown.lines() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Fence {
                    info: info.trim().to_string(),
                    body: String::new(),
                })
            }
            (Some(fence), Some(_)) => found.push(fence),
            (Some(mut fence), None) => {
                fence.body.push_str(line);
                fence.body.push('\n');
                open = Some(fence);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code fence is not closed");
    found
}

/// The blocks of one Quickstart subsection: its one `sh` block and the
/// other blocks, such as expected output.
struct Subsection {
    script: String,
    others: Vec<Fence>,
}

fn subsection(quickstart: &str, heading: &str) -> Subsection {
    let (scripts, others): (Vec<Fence>, Vec<Fence>) = fences(&section(quickstart, heading))
        .into_iter()
        .partition(|fence| fence.info == "sh");
    assert_eq!(
        scripts.len(),
        1,
        "{heading} must contain exactly one ```sh block"
    );
    Subsection {
        script: scripts.into_iter().next().unwrap().body,
        others,
    }
}

/// Returns the lines of `script` that are neither blank nor comments.
fn commands(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Returns the lines of `script` before its first `agyn send`.
fn before_send(script: &str) -> String {
    let lines: Vec<&str> = script.lines().collect();
    let send = lines
        .iter()
        .position(|line| line.trim_start().starts_with("agyn send "))
        .expect("the OpenAI block has no `agyn send` line");
    let mut prefix = lines[..send].join("\n");
    prefix.push('\n');
    prefix
}

/// Output of the script run.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `script` with `bash -euo pipefail` in `root/work`, with the
/// binary under test first on PATH and the server's data directory and
/// URL in AGYN_DATA_DIR and AGYN_GATEWAY_URL. The script runs in its own
/// process group, which is killed when it outlives [`SCRIPT_TIMEOUT`].
fn run_script(root: &Path, server: &Server, script: &str) -> Run {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_agyn"));
    let bin_dir = binary.parent().unwrap();
    let system_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_string());
    let home = root.join("home");
    let work = root.join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let script_path = root.join("quickstart.sh");
    std::fs::write(&script_path, script).unwrap();
    let stdout_path = root.join("stdout");
    let stderr_path = root.join("stderr");

    let mut child = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg(&script_path)
        .current_dir(&work)
        .env_clear()
        .env("PATH", format!("{}:{system_path}", bin_dir.display()))
        .env("HOME", &home)
        .env("AGYN_CONFIG_DIR", home.join(".config/agyn"))
        .env("AGYN_DATA_DIR", &server.data_dir)
        .env("AGYN_GATEWAY_URL", server.base_url())
        .env("OPENAI_API_KEY", canary())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("start bash");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    }
}

/// Stops the workload processes that the server's built-in runner started,
/// which outlive the server, before the server and its data directory go.
struct WorkloadProcesses<'a>(&'a Server);

impl Drop for WorkloadProcesses<'_> {
    fn drop(&mut self) {
        let prefix = self.0.data_dir.join("runner");
        let pids: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().to_string_lossy().into_owned();
                pid.chars().all(|c| c.is_ascii_digit()).then_some(pid)
            })
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let program = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
                Path::new(&*String::from_utf8_lossy(program)).starts_with(&prefix)
            })
            .collect();
        for pid in &pids {
            let _ = Command::new("kill").arg("-TERM").arg(pid).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Removes the scratch directory of a passing test.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn call(server: &Server, method: &str, body: Value) -> Value {
    let (status, response) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        method,
        body,
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{method}: {response}");
    response
}

fn id(value: &Value) -> String {
    value["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta.id in {value}"))
        .to_string()
}

/// Returns the only element of `list` whose `key` equals `value`.
fn only_with<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    let matches: Vec<&Value> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter(|item| item[key] == value)
        .collect();
    assert_eq!(matches.len(), 1, "one {key} = {value:?} in {list}");
    matches[0]
}

fn read_readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn start_block_matches_replaced_steps() {
    let readme = read_readme();
    let quickstart = section(&readme, SECTION);
    let start = subsection(&quickstart, START_HEADING);
    assert_eq!(commands(&start.script), START_COMMANDS);
}

#[tokio::test]
async fn quickstart_runs_as_written() {
    let readme = read_readme();
    let quickstart = section(&readme, SECTION);
    let scripted = subsection(&quickstart, SCRIPTED_HEADING);
    let openai = subsection(&quickstart, OPENAI_HEADING);

    let root = std::env::temp_dir().join(format!(
        "agyn-quickstart-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _cleanup = Cleanup(root.clone());
    // The same server as `agyn serve` without flags, apart from the data
    // directory, the ports and the log level.
    let server = Server::start();
    let _workloads = WorkloadProcesses(&server);

    let script = format!("{}\n{}", scripted.script, before_send(&openai.script));
    // Blocking is fine here: nothing else runs on the test's runtime.
    let run = run_script(&root, &server, &script);
    assert_eq!(
        run.status,
        Some(0),
        "the Quickstart failed:\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        server.log()
    );
    let stdout_lines: Vec<&str> = run.stdout.lines().collect();

    // `send --wait` printed the scripted reply to the admin's "hello".
    let me = call(&server, "agynio.api.users.v1.UsersGateway/GetMe", json!({})).await;
    let admin_id = id(&me["user"]);
    let reply = format!("  Hello! You wrote: @{admin_id}: hello");
    assert!(
        stdout_lines.contains(&reply.as_str()),
        "no reply line {reply:?} in:\n{}",
        run.stdout
    );

    // The organization the Quickstart created, and its one workload.
    let orgs = call(
        &server,
        "agynio.api.organizations.v1.OrganizationsGateway/ListOrganizations",
        json!({}),
    )
    .await;
    let org_id = id(only_with(&orgs["organizations"], "slug", "acme"));
    let workloads = call(
        &server,
        "agynio.api.runners.v1.RunnersGateway/ListWorkloads",
        json!({"organizationId": org_id}),
    )
    .await;
    let listed = workloads["workloads"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "one workload: {workloads}");
    let workload = &listed[0];
    let workload_id = id(workload);
    let thread_id = workload["threadId"].as_str().unwrap();
    assert_eq!(workload["agentName"], "Helper");

    // `workloads list` printed it under its header.
    assert!(
        stdout_lines
            .iter()
            .any(|line| line.starts_with("ID ") && line.contains("CONVERSATION ID")),
        "no workloads table header in:\n{}",
        run.stdout
    );
    let row = stdout_lines
        .iter()
        .find(|line| line.starts_with(&workload_id))
        .unwrap_or_else(|| panic!("no row of workload {workload_id} in:\n{}", run.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "Helper", "row: {row}");
    assert!(
        ["starting", "running"].contains(&cells[2]),
        "status in row: {row}"
    );
    assert_eq!(cells[4], thread_id, "row: {row}");

    // `logs` printed the agent's log of that workload.
    assert!(
        run.stdout.contains(&format!("workload_id={workload_id}")),
        "no agent log of {workload_id} in:\n{}",
        run.stdout
    );

    // The OpenAI block created its provider, model and agent.
    assert!(
        run.stdout
            .contains("openai  responses  https://api.openai.com"),
        "no OpenAI provider row in:\n{}",
        run.stdout
    );
    let providers = call(
        &server,
        "agynio.api.llm.v1.LLMGateway/ListProviders",
        json!({"organizationId": org_id}),
    )
    .await;
    let provider = only_with(&providers["providers"], "name", "openai");
    assert_eq!(provider["endpoint"], "https://api.openai.com");
    assert_eq!(provider["protocol"], "PROTOCOL_RESPONSES");
    let models = call(
        &server,
        "agynio.api.llm.v1.LLMGateway/ListModels",
        json!({"organizationId": org_id}),
    )
    .await;
    let model = only_with(&models["models"], "remoteName", "gpt-5-mini");
    assert_eq!(model["providerId"], id(provider).as_str());
    let agents = call(
        &server,
        "agynio.api.agents.v1.AgentsGateway/ListAgents",
        json!({"organizationId": org_id}),
    )
    .await;
    let assistant = only_with(&agents["agents"], "nickname", "assistant");
    assert_eq!(assistant["model"], id(model).as_str());

    // The key reached neither the output nor the server log, and the
    // admin token was not printed.
    for (name, text) in [
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
        ("server log", &server.log()),
    ] {
        assert!(!text.contains(&canary()), "the API key is in the {name}");
        assert!(
            !text.contains(&server.admin_token),
            "the admin token is in the {name}"
        );
    }

    // The expected output shown in the README has the same reply line.
    let expected_output = scripted
        .others
        .iter()
        .find(|fence| fence.info == "text")
        .expect("an expected output block after the scripted agent's commands");
    let shows_reply = expected_output
        .body
        .lines()
        .any(|line| line.starts_with("  Hello! You wrote: @") && line.ends_with(": hello"));
    assert!(
        shows_reply,
        "the README's expected output has no reply line:\n{}",
        expected_output.body
    );

    // Its workloads table has the columns that `workloads list` printed.
    let readme_columns = workload_columns(&expected_output.body)
        .expect("the README's expected output has the workloads table");
    let run_columns =
        workload_columns(&run.stdout).expect("the Quickstart printed the workloads table");
    assert_eq!(readme_columns, run_columns);
}

/// Returns the column names of the first `workloads list` header in
/// `text`. Columns are separated by at least two spaces.
fn workload_columns(text: &str) -> Option<Vec<String>> {
    let header = text
        .lines()
        .find(|line| line.starts_with("ID ") && line.contains("AGENT STATE"))?;
    let columns = header
        .split("  ")
        .map(str::trim)
        .filter(|column| !column.is_empty())
        .map(str::to_string)
        .collect();
    Some(columns)
}
