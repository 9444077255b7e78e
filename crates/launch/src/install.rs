//! `agyn install <dir>`: puts the running executable at `<dir>/agyn` with
//! mode 0755.
//!
//! A hard link is tried first, because it costs no copy of a large
//! binary. When linking fails (another file system, for example) the
//! executable is copied to a temporary name in `<dir>`, synced and
//! renamed into place, so `<dir>/agyn` is never seen half-written.
//! Running it again with the same executable changes nothing.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

/// File name of the installed executable inside the target directory.
pub const EXECUTABLE_NAME: &str = "agyn";

/// Permission bits of the installed executable.
const MODE: u32 = 0o755;

/// Path that reads as the running executable even after its file was
/// replaced or deleted (Linux).
const PROC_SELF_EXE: &str = "/proc/self/exe";

/// Arguments of `agyn install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Directory that receives the executable as <DIR>/agyn; created when absent.
    pub dir: PathBuf,
}

/// The way [`install`] put the executable in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// `<dir>/agyn` already was the same file.
    AlreadyPresent,
    /// `<dir>/agyn` is a new hard link to the executable.
    HardLinked,
    /// `<dir>/agyn` is a new copy of the executable.
    Copied,
}

/// A failed step of [`install`], with the path it acted on.
#[derive(Debug)]
pub struct InstallError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failed to {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Builds the error of `action` on `path`, for `map_err`.
fn error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError {
        action,
        path,
        source,
    }
}

/// Runs `agyn install`. Errors are printed to stderr, because install
/// starts no logger.
pub fn run(args: InstallArgs) -> ExitCode {
    // `current_exe` names a path that may have been replaced since this
    // process started; the copy then reads the running file itself.
    let source = std::env::current_exe()
        .ok()
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(PROC_SELF_EXE));
    match install(&source, &args.dir) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agyn install: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Puts `source` at `dir/agyn` with mode 0755, creating `dir` when absent.
///
/// A hard link is used when `source` already has mode 0755, because a
/// link shares the mode of its file and changing it would change
/// `source`. NOTE: a hard link also shares the contents, so a process
/// that writes to `dir/agyn` in place writes to `source`.
pub fn install(source: &Path, dir: &Path) -> Result<Installed, InstallError> {
    fs::create_dir_all(dir).map_err(error("create the directory", dir))?;
    let target = dir.join(EXECUTABLE_NAME);
    let source_metadata = fs::metadata(source).map_err(error("read", source))?;
    if let Ok(existing) = fs::symlink_metadata(&target)
        && existing.dev() == source_metadata.dev()
        && existing.ino() == source_metadata.ino()
        && existing.mode() & 0o7777 == MODE
    {
        return Ok(Installed::AlreadyPresent);
    }

    let temporary = dir.join(format!(".{EXECUTABLE_NAME}.{}.tmp", std::process::id()));
    remove_if_present(&temporary)?;
    if source_metadata.mode() & 0o7777 == MODE {
        match fs::hard_link(source, &temporary) {
            Ok(()) => {
                rename_into_place(&temporary, &target)?;
                return Ok(Installed::HardLinked);
            }
            Err(link_error) => eprintln!(
                "agyn install: copying {} because a hard link to it failed: {link_error}",
                source.display()
            ),
        }
    }
    let copied = copy_synced(source, &temporary).and_then(|()| {
        rename_into_place(&temporary, &target)?;
        sync_dir(dir)
    });
    if copied.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    copied.map(|()| Installed::Copied)
}

fn remove_if_present(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(error("remove the leftover", path)(source)),
    }
}

/// Copies `source` to the new file `temporary` with mode 0755 and syncs it.
fn copy_synced(source: &Path, temporary: &Path) -> Result<(), InstallError> {
    let mut input = fs::File::open(source).map_err(error("open", source))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(temporary)
        .map_err(error("create", temporary))?;
    io::copy(&mut input, &mut output).map_err(error("write", temporary))?;
    // The umask may have cleared bits of the mode given to open.
    output
        .set_permissions(fs::Permissions::from_mode(MODE))
        .map_err(error("set the mode of", temporary))?;
    output.sync_all().map_err(error("sync", temporary))
}

fn rename_into_place(temporary: &Path, target: &Path) -> Result<(), InstallError> {
    fs::rename(temporary, target).map_err(|source| {
        let _ = fs::remove_file(temporary);
        error("rename the new executable to", target)(source)
    })
}

/// Syncs the directory so that the rename survives a crash.
fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(error("sync the directory", dir))
}
