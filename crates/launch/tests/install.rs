//! `install` against real files: a hard link on one file system, a copy
//! across file systems, and repeated runs.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use agyn_launch::install::{Installed, install};

/// A file system other than the one of the default temporary directory,
/// where a hard link from there fails with EXDEV.
const OTHER_FILE_SYSTEM: &str = "/dev/shm";

fn executable(dir: &Path, mode: u32, contents: &[u8]) -> std::path::PathBuf {
    let path = dir.join("source-agyn");
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn install_hard_links_on_same_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let source = executable(dir.path(), 0o755, b"#!/bin/sh\necho linked\n");
    let target_dir = dir.path().join("agyn-bin");

    let installed = install(&source, &target_dir).unwrap();
    assert_eq!(installed, Installed::HardLinked);
    let target = target_dir.join("agyn");
    let source_metadata = std::fs::metadata(&source).unwrap();
    let target_metadata = std::fs::metadata(&target).unwrap();
    assert_eq!(target_metadata.ino(), source_metadata.ino());
    assert_eq!(target_metadata.mode() & 0o7777, 0o755);
    let output = std::process::Command::new(&target).output().unwrap();
    assert_eq!(output.stdout, b"linked\n");
}

#[test]
fn install_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = executable(dir.path(), 0o755, b"#!/bin/sh\n");
    let target_dir = dir.path().join("agyn-bin");
    assert_eq!(
        install(&source, &target_dir).unwrap(),
        Installed::HardLinked
    );
    assert_eq!(
        install(&source, &target_dir).unwrap(),
        Installed::AlreadyPresent
    );
    let names: Vec<String> = std::fs::read_dir(&target_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["agyn"]);
}

#[test]
fn install_copies_across_file_systems() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir_in(OTHER_FILE_SYSTEM).unwrap();
    let source = executable(dir.path(), 0o755, b"#!/bin/sh\necho copied\n");
    assert_ne!(
        std::fs::metadata(dir.path()).unwrap().dev(),
        std::fs::metadata(other.path()).unwrap().dev(),
        "the test needs {OTHER_FILE_SYSTEM} on another file system than the temporary directory"
    );

    let installed = install(&source, other.path()).unwrap();
    assert_eq!(installed, Installed::Copied);
    let target = other.path().join("agyn");
    let metadata = std::fs::metadata(&target).unwrap();
    assert_eq!(metadata.mode() & 0o7777, 0o755);
    assert_eq!(metadata.nlink(), 1);
    assert_eq!(std::fs::read(&target).unwrap(), b"#!/bin/sh\necho copied\n");
    let output = std::process::Command::new(&target).output().unwrap();
    assert_eq!(output.stdout, b"copied\n");

    // A copy is a different file, so a second run copies again and
    // leaves one file behind.
    assert_eq!(install(&source, other.path()).unwrap(), Installed::Copied);
    let names: Vec<String> = std::fs::read_dir(other.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["agyn"]);
}

#[test]
fn install_copies_source_with_other_mode() {
    let dir = tempfile::tempdir().unwrap();
    let source = executable(dir.path(), 0o700, b"#!/bin/sh\n");
    let target_dir = dir.path().join("agyn-bin");
    assert_eq!(install(&source, &target_dir).unwrap(), Installed::Copied);
    let source_metadata = std::fs::metadata(&source).unwrap();
    let target_metadata = std::fs::metadata(target_dir.join("agyn")).unwrap();
    assert_ne!(target_metadata.ino(), source_metadata.ino());
    assert_eq!(target_metadata.mode() & 0o7777, 0o755);
    assert_eq!(source_metadata.mode() & 0o7777, 0o700);
}

#[test]
fn install_replaces_other_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = executable(dir.path(), 0o755, b"#!/bin/sh\necho new\n");
    let target_dir = dir.path().join("agyn-bin");
    std::fs::create_dir(&target_dir).unwrap();
    std::fs::write(target_dir.join("agyn"), b"old").unwrap();
    assert_eq!(
        install(&source, &target_dir).unwrap(),
        Installed::HardLinked
    );
    assert_eq!(
        std::fs::read(target_dir.join("agyn")).unwrap(),
        b"#!/bin/sh\necho new\n"
    );
}

#[test]
fn install_reports_missing_source() {
    let dir = tempfile::tempdir().unwrap();
    let error = install(&dir.path().join("missing"), &dir.path().join("agyn-bin")).unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("failed to read "), "{message}");
    assert!(message.contains("missing"), "{message}");
}
