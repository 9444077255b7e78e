//! Turning a `StartWorkloadRequest` into a plan for the local runner:
//! validation, port allocation, the host paths of volumes and inline files,
//! and the rewritten argument vectors and environments.
//!
//! Error messages name the field and never repeat an environment value
//! or an inline file's contents, because both may be secret.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::{Error, Result};

use super::manifest::{ContainerRecord, ContainerState, Manifest, Role, VolumeKind, VolumeRecord};
use super::process::Launch;

/// Maximum length of an id or name used as a file name.
const MAX_NAME_LEN: usize = 128;

/// Name of the executable that maps to the runner's own `agyn` binary.
const AGYN_PROGRAM: &str = "agyn";

/// Reason of a container waiting for the init containers.
pub(crate) const POD_INITIALIZING: &str = "PodInitializing";

/// The locations a plan is built for.
pub(crate) struct Layout<'a> {
    pub runner_dir: &'a Path,
    pub workload_dir: &'a Path,
    pub agyn_executable: &'a Path,
    /// `PATH` given to containers whose spec sets none.
    pub path_env: &'a str,
}

impl Layout<'_> {
    pub fn root(&self) -> PathBuf {
        self.workload_dir.join("root")
    }

    pub fn logs(&self) -> PathBuf {
        self.workload_dir.join("logs")
    }
}

/// Everything StartWorkload creates, in memory.
pub(crate) struct Plan {
    pub manifest: Manifest,
    /// One entry per `manifest.containers` entry, in the same order.
    pub launches: Vec<Launch>,
    /// Host path and contents of each inline file.
    pub inline_files: Vec<(PathBuf, Vec<u8>)>,
    /// Symlink at `root/<mount path>` and the volume directory it points to.
    pub links: Vec<(PathBuf, PathBuf)>,
}

/// Checks that `value` can be used as one file name: 1 to 128 ASCII
/// letters, digits, `-`, `_` or `.`, not starting with `.`.
pub(crate) fn check_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    let allowed = value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if !allowed || value.starts_with('.') {
        return Err(Error::invalid_field(
            field,
            &format!(
                "{value:?} must contain only ASCII letters, digits, '-', '_' and '.', \
                 and must not start with '.'"
            ),
        ));
    }
    Ok(())
}

/// Checks an absolute container path: it starts with `/`, is not `/`
/// itself, and has no empty, `.` or `..` segment.
fn check_container_path(field: &str, value: &str) -> Result<()> {
    let Some(relative) = value.strip_prefix('/') else {
        return Err(Error::invalid_field(
            field,
            &format!("{value:?} must be an absolute path"),
        ));
    };
    let normal = !relative.is_empty()
        && !value.contains('\0')
        && relative
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if !normal {
        return Err(Error::invalid_field(
            field,
            &format!(
                "{value:?} must be a normalized absolute path other than / \
                 (no empty, '.' or '..' segments)"
            ),
        ));
    }
    Ok(())
}

/// Returns whether `path` equals `prefix` or lies under it.
fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Maps a container path to its place under the workload root.
fn host_path(root: &Path, container_path: &str) -> PathBuf {
    root.join(container_path.trim_start_matches('/'))
}

/// Rewrites `value` when it equals or falls under one of the container
/// paths of `mappings`, using the longest match.
pub(crate) fn rewrite_path(value: &str, mappings: &[(String, PathBuf)]) -> String {
    let best = mappings
        .iter()
        .filter(|(path, _)| is_under(value, path))
        .max_by_key(|(path, _)| path.len());
    match best {
        Some((path, host)) => format!("{}{}", host.display(), &value[path.len()..]),
        None => value.to_string(),
    }
}

/// Replaces every `${port:<name>}` in `value` with the port allocated for
/// `name`. `field` names the value in errors, which never quote it.
pub(crate) fn substitute_ports(
    field: &str,
    value: &str,
    ports: &BTreeMap<String, u16>,
) -> Result<String> {
    const OPEN: &str = "${port:";
    let mut output = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        output.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(Error::invalid_field(
                field,
                "contains a ${port: placeholder without a closing '}'",
            ));
        };
        let name = &after[..end];
        let Some(port) = ports.get(name) else {
            return Err(Error::invalid_field(
                field,
                &format!("placeholder ${{port:{name}}} names a port that is not declared in ports"),
            ));
        };
        output.push_str(&port.to_string());
        rest = &after[end + 1..];
    }
    output.push_str(rest);
    Ok(output)
}

/// Allocates one free loopback port per declared name.
///
/// Every listener stays bound until all ports are chosen, so the ports of
/// one workload differ. NOTE: another process may take a port between this
/// check and the container binding it.
fn allocate_ports(ports: &[pb::PortSpec]) -> Result<BTreeMap<String, u16>> {
    let mut listeners = Vec::with_capacity(ports.len());
    let mut allocated = BTreeMap::new();
    for (index, port) in ports.iter().enumerate() {
        let field = format!("ports[{index}].name");
        if port.name.is_empty() {
            return Err(Error::invalid_field(&field, "must not be empty"));
        }
        if port.name.contains('}') {
            return Err(Error::invalid_field(&field, "must not contain '}'"));
        }
        if allocated.contains_key(&port.name) {
            return Err(Error::invalid_field(
                &field,
                &format!("port {:?} is declared twice", port.name),
            ));
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| {
            Error::unavailable(format!("failed to allocate a free port: {error}"))
        })?;
        let number = listener
            .local_addr()
            .map_err(|error| {
                Error::unavailable(format!("failed to allocate a free port: {error}"))
            })?
            .port();
        listeners.push(listener);
        allocated.insert(port.name.clone(), number);
    }
    Ok(allocated)
}

/// Validates the volumes and returns their records by name.
fn plan_volumes(
    request: &pb::StartWorkloadRequest,
    layout: &Layout<'_>,
) -> Result<BTreeMap<String, VolumeRecord>> {
    let mut volumes = BTreeMap::new();
    for (index, volume) in request.volumes.iter().enumerate() {
        check_name(&format!("volumes[{index}].name"), &volume.name)?;
        let (kind, host_path) = match volume.kind.as_known() {
            Some(pb::VolumeKind::VOLUME_KIND_EPHEMERAL) => (
                VolumeKind::Ephemeral,
                layout.workload_dir.join("volumes").join(&volume.name),
            ),
            Some(pb::VolumeKind::VOLUME_KIND_NAMED) => {
                check_name(
                    &format!("volumes[{index}].persistent_name"),
                    &volume.persistent_name,
                )?;
                (
                    VolumeKind::Named,
                    layout
                        .runner_dir
                        .join("volumes")
                        .join(&volume.persistent_name),
                )
            }
            _ => {
                return Err(Error::invalid_field(
                    &format!("volumes[{index}].kind"),
                    "must be VOLUME_KIND_EPHEMERAL or VOLUME_KIND_NAMED",
                ));
            }
        };
        let record = VolumeRecord {
            name: volume.name.clone(),
            kind,
            persistent_name: match kind {
                VolumeKind::Named => volume.persistent_name.clone(),
                VolumeKind::Ephemeral => String::new(),
            },
            host_path,
        };
        if volumes.insert(volume.name.clone(), record).is_some() {
            return Err(Error::invalid_field(
                &format!("volumes[{index}].name"),
                &format!("volume {:?} is declared twice", volume.name),
            ));
        }
    }
    Ok(volumes)
}

/// Collects the containers of a request in start order, with their roles
/// and the field paths used in errors, and checks their names.
fn containers(
    request: &pb::StartWorkloadRequest,
) -> Result<Vec<(Role, String, &pb::ContainerSpec)>> {
    let Some(main) = request.main.as_option() else {
        return Err(Error::invalid_field("main", "is required"));
    };
    let mut all = Vec::new();
    for (index, container) in request.init_containers.iter().enumerate() {
        all.push((Role::Init, format!("init_containers[{index}]"), container));
    }
    all.push((Role::Main, "main".to_string(), main));
    for (index, container) in request.sidecars.iter().enumerate() {
        all.push((Role::Sidecar, format!("sidecars[{index}]"), container));
    }
    let mut names = HashSet::new();
    for (_, field, container) in &all {
        check_name(&format!("{field}.name"), &container.name)?;
        if !names.insert(container.name.as_str()) {
            return Err(Error::invalid_field(
                &format!("{field}.name"),
                &format!("container {:?} is declared twice", container.name),
            ));
        }
    }
    Ok(all)
}

/// Checks the mounts of every container and returns the volume name of
/// each mount path. Every mount path maps to one volume, and no mount path
/// lies under another, because all containers share the workload root.
fn plan_mounts<'a>(
    containers: &[(Role, String, &'a pb::ContainerSpec)],
    volumes: &BTreeMap<String, VolumeRecord>,
) -> Result<BTreeMap<&'a str, &'a str>> {
    let mut by_path: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, field, container) in containers {
        for (index, mount) in container.mounts.iter().enumerate() {
            let field = format!("{field}.mounts[{index}]");
            if !volumes.contains_key(&mount.volume) {
                return Err(Error::invalid_field(
                    &format!("{field}.volume"),
                    &format!("volume {:?} is not declared in volumes", mount.volume),
                ));
            }
            check_container_path(&format!("{field}.mount_path"), &mount.mount_path)?;
            match by_path.get(mount.mount_path.as_str()) {
                Some(volume) if *volume != mount.volume => {
                    return Err(Error::invalid_field(
                        &format!("{field}.mount_path"),
                        &format!(
                            "{:?} is already the mount path of volume {volume:?}",
                            mount.mount_path
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    by_path.insert(&mount.mount_path, &mount.volume);
                }
            }
        }
    }
    for outer in by_path.keys() {
        for inner in by_path.keys() {
            if outer != inner && is_under(inner, outer) {
                return Err(Error::invalid_argument(format!(
                    "mount path {inner:?} lies under mount path {outer:?}, which the \
                     local runner cannot nest; choose mount paths that do not overlap"
                )));
            }
        }
    }
    Ok(by_path)
}

/// Checks the inline files and returns their host paths with their
/// contents. A file under the mount path of an ephemeral volume is written
/// into that volume's directory, and any other file under the workload
/// root. Both kinds are deleted at stop.
fn plan_inline_files(
    request: &pb::StartWorkloadRequest,
    mounts: &BTreeMap<&str, &str>,
    volumes: &BTreeMap<String, VolumeRecord>,
    root: &Path,
) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (path, contents) in &request.inline_files {
        let field = format!("inline_files[{path:?}]");
        check_container_path(&field, path)?;
        let mount = mounts
            .iter()
            .find(|(mount_path, _)| is_under(path, mount_path));
        let host = match mount {
            None => host_path(root, path),
            Some((mount_path, _)) if path == mount_path => {
                return Err(Error::invalid_field(
                    &field,
                    &format!("{path:?} is a mount path; an inline file must lie under it"),
                ));
            }
            Some((mount_path, volume)) => {
                let volume = &volumes[*volume];
                if volume.kind == VolumeKind::Named {
                    // Deleting the file at stop would delete data of a
                    // volume that outlives the workload.
                    return Err(Error::invalid_field(
                        &field,
                        &format!(
                            "{path:?} lies under mount path {mount_path:?} of named volume {:?}; \
                             put inline files under an ephemeral volume or outside every mount path",
                            volume.name
                        ),
                    ));
                }
                volume.host_path.join(&path[mount_path.len() + 1..])
            }
        };
        files.push((host, contents.to_vec()));
    }
    files.sort();
    Ok(files)
}

/// Builds the manifest record and the launch of one container.
fn plan_container(
    role: Role,
    field: &str,
    container: &pb::ContainerSpec,
    request: &pb::StartWorkloadRequest,
    ports: &BTreeMap<String, u16>,
    layout: &Layout<'_>,
) -> Result<(ContainerRecord, Launch)> {
    let root = layout.root();
    // NOTE: every container runs as the runner's user in one shared root,
    // so `read_only` mounts stay writable and an inline file is readable by
    // containers that do not list it. Only the path rewriting differs.
    let mut mappings: Vec<(String, PathBuf)> = container
        .mounts
        .iter()
        .map(|mount| {
            (
                mount.mount_path.clone(),
                host_path(&root, &mount.mount_path),
            )
        })
        .collect();
    for (index, path) in container.inline_file_paths.iter().enumerate() {
        if !request.inline_files.contains_key(path) {
            return Err(Error::invalid_field(
                &format!("{field}.inline_file_paths[{index}]"),
                &format!("{path:?} is not a key of inline_files"),
            ));
        }
        mappings.push((path.clone(), host_path(&root, path)));
    }

    if container.command.is_empty() {
        return Err(Error::invalid_field(
            &format!("{field}.command"),
            "must not be empty; the local runner has no image default command",
        ));
    }
    let mut command = Vec::with_capacity(container.command.len());
    for (index, argument) in container.command.iter().enumerate() {
        let argument_field = format!("{field}.command[{index}]");
        if argument.contains('\0') {
            return Err(Error::invalid_field(
                &argument_field,
                "must not contain NUL",
            ));
        }
        let argument = substitute_ports(&argument_field, argument, ports)?;
        command.push(rewrite_path(&argument, &mappings));
    }
    let program = if container.command[0] == AGYN_PROGRAM {
        layout.agyn_executable.to_path_buf()
    } else {
        PathBuf::from(&command[0])
    };

    let working_dir = if container.working_dir.is_empty() {
        root.clone()
    } else {
        check_container_path(&format!("{field}.working_dir"), &container.working_dir)?;
        PathBuf::from(rewrite_path(&container.working_dir, &mappings))
    };

    let env = plan_env(field, container, ports, &mappings, layout)?;
    let record = ContainerRecord {
        name: container.name.clone(),
        role,
        image: container.image.clone(),
        command: command.clone(),
        working_dir: working_dir.clone(),
        env_names: container.env.iter().map(|var| var.name.clone()).collect(),
        state: ContainerState::Waiting {
            reason: POD_INITIALIZING.to_string(),
        },
        pid: None,
        process_start_ticks: None,
        started_at: None,
        finished_at: None,
    };
    let launch = Launch {
        program,
        args: command[1..].to_vec(),
        working_dir,
        env,
        log_file: super::manifest::log_file(layout.workload_dir, &container.name),
    };
    Ok((record, launch))
}

/// Builds a container's environment: the spec's variables after port
/// substitution and path rewriting, then `PATH` unless the spec sets it,
/// and `HOME` and `AGYN_ROOT`, which always point into the workload root.
fn plan_env(
    field: &str,
    container: &pb::ContainerSpec,
    ports: &BTreeMap<String, u16>,
    mappings: &[(String, PathBuf)],
    layout: &Layout<'_>,
) -> Result<Vec<(String, String)>> {
    let root = layout.root();
    let mut env: Vec<(String, String)> = Vec::with_capacity(container.env.len() + 3);
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (index, var) in container.env.iter().enumerate() {
        let name_field = format!("{field}.env[{index}].name");
        if var.name.is_empty() || var.name.contains(['=', '\0']) {
            return Err(Error::invalid_field(
                &name_field,
                "must be non-empty and contain neither '=' nor NUL",
            ));
        }
        let value_field = format!("{field}.env[{index}].value");
        if var.value.contains('\0') {
            return Err(Error::invalid_field(&value_field, "must not contain NUL"));
        }
        let value = substitute_ports(&value_field, &var.value, ports)?;
        let value = rewrite_path(&value, mappings);
        match positions.get(&var.name) {
            Some(&position) => env[position].1 = value,
            None => {
                positions.insert(var.name.clone(), env.len());
                env.push((var.name.clone(), value));
            }
        }
    }
    env.retain(|(name, _)| name != "HOME" && name != "AGYN_ROOT");
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".to_string(), layout.path_env.to_string()));
    }
    env.push(("HOME".to_string(), root.join("home").display().to_string()));
    env.push(("AGYN_ROOT".to_string(), root.display().to_string()));
    Ok(env)
}

/// Validates `request` and builds the plan to run it under `layout`.
pub(crate) fn plan(request: &pb::StartWorkloadRequest, layout: &Layout<'_>) -> Result<Plan> {
    let root = layout.root();
    let containers = containers(request)?;
    let volumes = plan_volumes(request, layout)?;
    let mounts = plan_mounts(&containers, &volumes)?;
    let inline_files = plan_inline_files(request, &mounts, &volumes, &root)?;
    let links = mounts
        .iter()
        .map(|(path, volume)| (host_path(&root, path), volumes[*volume].host_path.clone()))
        .collect();
    let ports = allocate_ports(&request.ports)?;

    let mut records = Vec::with_capacity(containers.len());
    let mut launches = Vec::with_capacity(containers.len());
    for (role, field, container) in &containers {
        let (record, launch) = plan_container(*role, field, container, request, &ports, layout)?;
        records.push(record);
        launches.push(launch);
    }

    let manifest = Manifest {
        workload_id: request.workload_id.clone(),
        instance_id: agyn_core::id::new_id(),
        labels: request
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        created_at: agyn_core::time::now_micros(),
        stopped: false,
        failure: None,
        containers: records,
        volumes: volumes.into_values().collect(),
        ports,
        inline_files: inline_files.iter().map(|(path, _)| path.clone()).collect(),
    };
    Ok(Plan {
        manifest,
        launches,
        inline_files,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_path_matches_whole_segments() {
        let mappings = vec![
            ("/data".to_string(), PathBuf::from("/r/root/data")),
            (
                "/data/cache".to_string(),
                PathBuf::from("/r/root/data/cache"),
            ),
        ];
        assert_eq!(rewrite_path("/data", &mappings), "/r/root/data");
        assert_eq!(rewrite_path("/data/a/b", &mappings), "/r/root/data/a/b");
        assert_eq!(rewrite_path("/database", &mappings), "/database");
        assert_eq!(rewrite_path("relative/data", &mappings), "relative/data");
        assert_eq!(
            rewrite_path("/data/cache/x", &mappings),
            "/r/root/data/cache/x"
        );
    }

    #[test]
    fn substitute_ports_replaces_each_placeholder() {
        let ports = BTreeMap::from([("http".to_string(), 8080), ("mcp".to_string(), 9000)]);
        let value = substitute_ports("f", "a=${port:http},b=${port:mcp}${port:http}", &ports);
        assert_eq!(value.unwrap(), "a=8080,b=90008080");
        assert_eq!(
            substitute_ports("f", "no placeholder", &ports).unwrap(),
            "no placeholder"
        );
    }

    #[test]
    fn substitute_ports_rejects_undeclared_names() {
        let ports = BTreeMap::from([("http".to_string(), 8080)]);
        let error = substitute_ports("main.env[0].value", "${port:grpc}", &ports).unwrap_err();
        assert_eq!(error.code(), agyn_core::error::Code::InvalidArgument);
        assert!(error.message().contains("grpc"), "{}", error.message());
        let error = substitute_ports("f", "${port:http", &ports).unwrap_err();
        assert_eq!(error.code(), agyn_core::error::Code::InvalidArgument);
    }

    #[test]
    fn container_paths_are_normalized() {
        for bad in ["", "relative", "/", "/a//b", "/a/./b", "/a/../b", "/a/"] {
            assert!(check_container_path("p", bad).is_err(), "{bad:?}");
        }
        for good in ["/a", "/a/b.c", "/etc/agyn/config.toml"] {
            assert!(check_container_path("p", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn names_are_single_file_names() {
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
        for good in ["main", "agyn-vol-01J", "a.b_c-d"] {
            assert!(check_name("n", good).is_ok(), "{good:?}");
        }
    }
}
