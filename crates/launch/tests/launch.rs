//! Init scripts and the exec of `launch`, with real `/bin/sh` processes.
//!
//! The exec test runs this test binary again as a child with
//! `LAUNCH_HELPER` set, so that [`launch::run`] replaces that child and
//! not the test process.

use std::path::Path;
use std::time::Duration;

use agyn_launch::LaunchArgs;
use agyn_launch::init::{self, Outcome};
use agyn_launch::launch;

/// Set in the child of `launch_runs_scripts_then_execs`, with the command
/// to launch as a JSON array.
const HELPER_ENV: &str = "LAUNCH_HELPER";

fn write_script(dir: &Path, name: &str, script: &str) {
    std::fs::write(dir.join(name), script).unwrap();
}

#[test]
fn init_scripts_run_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order.log");
    let scripts = dir.path().join("init");
    std::fs::create_dir(&scripts).unwrap();
    for name in ["010.sh", "002.sh", "001.sh"] {
        write_script(
            &scripts,
            name,
            &format!("echo {name} >> '{}'", log.display()),
        );
    }
    write_script(
        &scripts,
        "notes.txt",
        &format!("echo notes >> '{}'", log.display()),
    );
    std::fs::create_dir(scripts.join("003.sh")).unwrap();

    let outcomes = init::run_scripts(&scripts, Duration::from_secs(60));
    let names: Vec<String> = outcomes
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["001.sh", "002.sh", "010.sh"]);
    assert!(
        outcomes.iter().all(|(_, outcome)| outcome.succeeded()),
        "{outcomes:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "001.sh\n002.sh\n010.sh\n"
    );
}

#[test]
fn failing_init_script_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    write_script(dir.path(), "001.sh", "echo failing >&2; exit 3");
    write_script(
        dir.path(),
        "002.sh",
        &format!("echo second >> '{}'", log.display()),
    );

    let outcomes = init::run_scripts(dir.path(), Duration::from_secs(60));
    assert_eq!(outcomes.len(), 2);
    match &outcomes[0].1 {
        Outcome::Exited(status) => assert_eq!(status.code(), Some(3)),
        other => panic!("001.sh: {other:?}"),
    }
    assert!(outcomes[1].1.succeeded(), "{:?}", outcomes[1].1);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "second\n");
}

#[test]
fn init_script_over_time_limit_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    write_script(dir.path(), "001.sh", "exec sleep 30");
    write_script(
        dir.path(),
        "002.sh",
        &format!("echo after >> '{}'", log.display()),
    );

    let outcomes = init::run_scripts(dir.path(), Duration::from_millis(300));
    assert!(
        matches!(outcomes[0].1, Outcome::TimedOut),
        "{:?}",
        outcomes[0].1
    );
    assert!(outcomes[1].1.succeeded(), "{:?}", outcomes[1].1);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
}

#[test]
fn init_script_sees_its_path_as_arg0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("arg0");
    write_script(
        dir.path(),
        "001.sh",
        &format!("echo \"$0\" > '{}'", out.display()),
    );
    let outcomes = init::run_scripts(dir.path(), Duration::from_secs(60));
    assert!(outcomes[0].1.succeeded(), "{:?}", outcomes[0].1);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim_end(),
        dir.path().join("001.sh").display().to_string()
    );
}

#[test]
fn missing_init_dir_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = init::run_scripts(&dir.path().join("absent"), Duration::from_secs(60));
    assert!(outcomes.is_empty());
}

#[test]
fn launch_runs_scripts_then_execs() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let scripts = dir.path().join("init");
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&scripts).unwrap();
    write_script(
        &scripts,
        "001.sh",
        "pwd > init-pwd; echo \"$GREETING\" > init-env; exit 1",
    );
    write_script(&scripts, "002.sh", "touch init-second");
    let command = [
        "/bin/sh",
        "-c",
        "test -f init-second || exit 9; echo $$ > main-pid; echo \"$GREETING\" \"$1\" > main-env; exit 7",
        "sh",
        "argument",
    ];

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exec_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, serde_json::to_string(&command).unwrap())
        .env(init::INIT_DIR_ENV, &scripts)
        .env("GREETING", "hello")
        .current_dir(&work)
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(7));
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap();
    assert_eq!(read("main-pid").trim(), pid.to_string());
    assert_eq!(read("main-env"), "hello argument\n");
    assert_eq!(
        Path::new(read("init-pwd").trim()).canonicalize().unwrap(),
        work.canonicalize().unwrap()
    );
    assert_eq!(read("init-env"), "hello\n");
}

/// Launches the command of `LAUNCH_HELPER`; does nothing when it is unset.
#[test]
fn exec_helper() {
    let Ok(command) = std::env::var(HELPER_ENV) else {
        return;
    };
    let command: Vec<String> = serde_json::from_str(&command).unwrap();
    let code = launch::run(LaunchArgs {
        mcp_stdio_bridge: false,
        port: None,
        path: "/mcp".to_string(),
        command,
    });
    panic!("launch returned {code:?} instead of replacing the process");
}
