//! The stored login: gateway URL, API token and CA certificate path in
//! `<config dir>/credentials.json`.
//!
//! The config directory is `$AGYN_CONFIG_DIR`, else `$XDG_CONFIG_HOME/agyn`,
//! else `~/.config/agyn`. The file is written with mode 0600 and its
//! directory with mode 0700, because the file contains the token in clear.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use agyn_core::Secret;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

const FILE_NAME: &str = "credentials.json";

/// A gateway and the token to call it with.
#[derive(Debug)]
pub struct Credentials {
    pub gateway_url: String,
    pub token: Secret<String>,
    /// PEM file of the CA that signs the gateway's certificate, for an
    /// `https://` gateway outside the system's trust roots.
    pub ca_file: Option<PathBuf>,
}

/// The file's JSON form.
#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    gateway_url: String,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

/// Returns the config directory from the environment (see the module
/// documentation).
pub fn config_dir() -> Result<PathBuf> {
    config_dir_from(|name| std::env::var_os(name))
}

/// Returns the config directory from the variables that `lookup` returns.
/// Empty variables count as unset.
fn config_dir_from(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    let var = |name: &str| lookup(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("AGYN_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("agyn"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("agyn")),
        None => Err(CliError::failed(
            "cannot find the config directory: set AGYN_CONFIG_DIR or HOME",
        )),
    }
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the credentials stored in `dir`, or `None` when there are none.
pub fn load(dir: &Path) -> Result<Option<Credentials>> {
    let path = path_in(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(CliError::failed(format!(
                "failed to read {}: {error}",
                path.display()
            )));
        }
    };
    let stored: StoredCredentials = serde_json::from_str(&text).map_err(|error| {
        CliError::failed(format!(
            "{} is not valid credentials JSON ({error}); run agyn login again",
            path.display()
        ))
    })?;
    // `agyn login` stores the token trimmed, but a file written by hand
    // may keep the newline of a token file.
    Ok(Some(Credentials {
        gateway_url: stored.gateway_url,
        token: Secret::new(stored.token.trim().to_string()),
        ca_file: stored.ca_file,
    }))
}

/// Writes `credentials` to `dir`, creating the directory with mode 0700
/// and tightening an existing one to 0700. The file is replaced
/// atomically through a temporary file created with mode 0600, so it
/// never exists with wider permissions. Returns the file's path.
pub fn save(dir: &Path, credentials: &Credentials) -> Result<PathBuf> {
    let dir_error = |error: std::io::Error| {
        CliError::failed(format!(
            "failed to create the config directory {}: {error}",
            dir.display()
        ))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_error)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_error)?;

    let stored = StoredCredentials {
        gateway_url: credentials.gateway_url.clone(),
        token: credentials.token.expose().clone(),
        ca_file: credentials.ca_file.clone(),
    };
    let mut text = serde_json::to_string_pretty(&stored)
        .map_err(|error| CliError::failed(format!("failed to encode the credentials: {error}")))?;
    text.push('\n');

    let path = path_in(dir);
    let temporary = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let write_error = |error: std::io::Error| {
        CliError::failed(format!("failed to write {}: {error}", path.display()))
    };
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(write_error(error));
    }
    Ok(path)
}

/// Deletes the credentials file in `dir`. Returns whether there was one.
pub fn remove(dir: &Path) -> Result<bool> {
    let path = path_in(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CliError::failed(format!(
            "failed to remove {}: {error}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns a fresh path under the system temp directory that does not
    /// exist yet. The test removes it.
    fn scratch_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("agyn-cli-{name}-{}-{nanos}", std::process::id()))
    }

    fn sample() -> Credentials {
        Credentials {
            gateway_url: "http://127.0.0.1:8080".to_string(),
            token: Secret::new("agyn_sample".to_string()),
            ca_file: Some(PathBuf::from("/etc/agyn/ca.crt")),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn lookup<'a>(
        variables: &'a [(&'a str, &'a str)],
    ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.into())
        }
    }

    #[test]
    fn config_dir_prefers_agyn_config_dir() {
        let variables = [
            ("AGYN_CONFIG_DIR", "/srv/agyn"),
            ("XDG_CONFIG_HOME", "/home/a/.xdg"),
            ("HOME", "/home/a"),
        ];
        let dir = config_dir_from(lookup(&variables)).unwrap();
        assert_eq!(dir, PathBuf::from("/srv/agyn"));
    }

    #[test]
    fn config_dir_falls_back_to_xdg_then_home() {
        let xdg = [("XDG_CONFIG_HOME", "/home/a/.xdg"), ("HOME", "/home/a")];
        let dir = config_dir_from(lookup(&xdg)).unwrap();
        assert_eq!(dir, PathBuf::from("/home/a/.xdg/agyn"));

        let home = [
            ("AGYN_CONFIG_DIR", ""),
            ("XDG_CONFIG_HOME", ""),
            ("HOME", "/home/a"),
        ];
        let dir = config_dir_from(lookup(&home)).unwrap();
        assert_eq!(dir, PathBuf::from("/home/a/.config/agyn"));
    }

    #[test]
    fn config_dir_without_home_fails() {
        let error = config_dir_from(lookup(&[])).unwrap_err().to_string();
        assert!(error.contains("AGYN_CONFIG_DIR"), "{error}");
    }

    #[test]
    fn save_then_load_round_trips() {
        let root = scratch_dir("round-trip");
        let dir = root.join("config");
        save(&dir, &sample()).unwrap();
        let loaded = load(&dir).unwrap().expect("credentials were saved");
        assert_eq!(loaded.gateway_url, "http://127.0.0.1:8080");
        assert_eq!(loaded.token.expose(), "agyn_sample");
        assert_eq!(loaded.ca_file, Some(PathBuf::from("/etc/agyn/ca.crt")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn save_sets_private_modes() {
        let root = scratch_dir("modes");
        let dir = root.join("config");
        let path = save(&dir, &sample()).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn save_tightens_existing_directory() {
        let root = scratch_dir("tighten");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        save(&root, &sample()).unwrap();
        assert_eq!(mode(&root), 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != FILE_NAME)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn load_without_file_is_none() {
        let root = scratch_dir("missing");
        assert!(load(&root).unwrap().is_none());
    }

    #[test]
    fn load_rejects_invalid_json() {
        let root = scratch_dir("invalid");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(path_in(&root), "{not json").unwrap();
        let error = load(&root).unwrap_err().to_string();
        assert!(error.contains("not valid credentials JSON"), "{error}");
        assert!(error.contains("agyn login"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn load_trims_the_token() {
        let root = scratch_dir("trim");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            path_in(&root),
            r#"{"gateway_url": "http://127.0.0.1:8080", "token": "agyn_sample\n"}"#,
        )
        .unwrap();
        let loaded = load(&root).unwrap().expect("credentials were written");
        assert_eq!(loaded.token.expose(), "agyn_sample");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn remove_reports_whether_a_file_existed() {
        let root = scratch_dir("remove");
        save(&root, &sample()).unwrap();
        assert!(remove(&root).unwrap());
        assert!(!remove(&root).unwrap());
        assert!(!path_in(&root).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
