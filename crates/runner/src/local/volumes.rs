//! Named volumes: `volumes/<persistent_name>/` under the runner directory,
//! with the labels they were created with in `volumes/<persistent_name>.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::{Error, Result};

use super::process::create_private_dir;

/// Label whose value ListVolumes reports as `volume_id_label`.
const VOLUME_ID_LABEL: &str = "agyn.volume_id";

fn volume_dir(runner_dir: &Path, persistent_name: &str) -> PathBuf {
    runner_dir.join("volumes").join(persistent_name)
}

fn labels_file(runner_dir: &Path, persistent_name: &str) -> PathBuf {
    runner_dir
        .join("volumes")
        .join(format!("{persistent_name}.json"))
}

pub(crate) fn exists(runner_dir: &Path, persistent_name: &str) -> bool {
    volume_dir(runner_dir, persistent_name).is_dir()
}

/// Creates a named volume unless it exists. The labels of an existing
/// volume are kept.
pub(crate) fn ensure(
    runner_dir: &Path,
    persistent_name: &str,
    labels: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    if exists(runner_dir, persistent_name) {
        return Ok(());
    }
    create_private_dir(&volume_dir(runner_dir, persistent_name))?;
    let bytes = serde_json::to_vec_pretty(labels).map_err(std::io::Error::other)?;
    std::fs::write(labels_file(runner_dir, persistent_name), bytes)
}

/// Lists the named volumes, sorted by name.
pub(crate) fn list(runner_dir: &Path) -> Result<Vec<pb::VolumeSummary>> {
    let dir = runner_dir.join("volumes");
    let entries = std::fs::read_dir(&dir).map_err(|error| {
        Error::unavailable(format!("failed to read {}: {error}", dir.display()))
    })?;
    let mut volumes = Vec::new();
    for entry in entries.flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let labels: BTreeMap<String, String> = std::fs::read(labels_file(runner_dir, &name))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        volumes.push(pb::VolumeSummary {
            volume_id_label: labels.get(VOLUME_ID_LABEL).cloned().unwrap_or_default(),
            instance_id: name.clone(),
            persistent_name: name,
            ..Default::default()
        });
    }
    volumes.sort_by(|a, b| a.persistent_name.cmp(&b.persistent_name));
    Ok(volumes)
}

/// Deletes a named volume and its labels. An unknown name succeeds.
pub(crate) fn remove(runner_dir: &Path, persistent_name: &str) -> Result<()> {
    let dir = volume_dir(runner_dir, persistent_name);
    for result in [
        std::fs::remove_dir_all(&dir),
        std::fs::remove_file(labels_file(runner_dir, persistent_name)),
    ] {
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::unavailable(format!(
                    "failed to delete volume {persistent_name}: {error}"
                )));
            }
        }
    }
    tracing::info!(persistent_name, "Removed a named volume");
    Ok(())
}
