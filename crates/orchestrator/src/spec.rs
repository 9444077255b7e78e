//! The `StartWorkloadRequest` of one workload, built from the agent's
//! bundle and the resolved secrets.
//!
//! Layout of every workload:
//!
//! - volume `agyn-bin` (ephemeral) at `/agyn-bin`, read-only except for the
//!   init container `agyn-init`, which copies the `agyn` executable there;
//! - main container `agent` running `/agyn-bin/agyn launch -- /agyn-bin/agyn
//!   agent` in `/workspace`, with the workload certificate as inline files
//!   under `/agyn-bin/tls/`;
//! - one sidecar `mcp-<name>` per MCP server and `hook-<id8>` per hook,
//!   each with a declared port;
//! - each container's init scripts as inline files
//!   `/agyn-bin/init/<container>/<NNN>.sh`, which `agyn launch` runs from
//!   `AGYN_INIT_DIR`.

use std::collections::HashMap;

use agyn_agents::{AgentBundle, EnvSource, HookRecord, McpRecord, McpTransport, Resources, Target};
use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_api_runners::agynio::api::runners::v1 as runners_pb;
use agyn_core::Secret;

use crate::config::OrchestratorConfig;
use crate::quantity::Allocation;

pub(crate) const INIT_CONTAINER: &str = "agyn-init";
pub(crate) const MAIN_CONTAINER: &str = "agent";
const BIN_VOLUME: &str = "agyn-bin";
const BIN_PATH: &str = "/agyn-bin";
const AGYN: &str = "/agyn-bin/agyn";
const WORKSPACE_VOLUME: &str = "workspace";
const WORKSPACE_PATH: &str = "/workspace";
const TLS_CERT_FILE: &str = "/agyn-bin/tls/cert.pem";
const TLS_KEY_FILE: &str = "/agyn-bin/tls/key.pem";
const CA_FILE: &str = "/agyn-bin/tls/ca.pem";
/// First preferred port of the MCP sidecars, then one per server.
const MCP_PORT_BASE: i32 = 8100;
/// First preferred port of the hook sidecars, then one per hook.
const HOOK_PORT_BASE: i32 = 8200;

/// Label that marks the runner objects the platform created.
pub(crate) const MANAGED_BY_LABEL: &str = "agyn.managed_by";
pub(crate) const MANAGED_BY: &str = "agyn";
/// Label of a named volume with its provisioned volume id, which runners
/// report as `volume_id_label`.
const VOLUME_ID_LABEL: &str = "agyn.volume_id";

/// The workload certificate of one workload.
pub(crate) struct Credential<'a> {
    pub certificate_pem: &'a str,
    pub private_key_pem: &'a Secret<String>,
    pub ca_pem: &'a str,
}

/// Everything one workload is built from.
pub(crate) struct SpecInput<'a> {
    pub config: &'a OrchestratorConfig,
    pub bundle: &'a AgentBundle,
    pub thread_id: &'a str,
    pub workload_id: &'a str,
    /// Values of the secret-backed environment variables, by env id.
    pub secret_env: &'a HashMap<String, Secret<String>>,
    /// Provisioned volume id of each persistent volume definition, by
    /// definition id.
    pub volume_keys: &'a HashMap<String, String>,
    pub credential: Credential<'a>,
    pub pull_credentials: Vec<runner_pb::ImagePullCredential>,
}

/// A built workload: the runner request, which contains secrets and is
/// never logged, and what the workload record starts with.
pub(crate) struct Spec {
    pub request: runner_pb::StartWorkloadRequest,
    pub containers: Vec<runners_pb::Container>,
    pub allocated_cpu_millicores: i32,
    pub allocated_ram_bytes: i64,
}

/// Returns the container name of a hook: `hook-` and the first 8 hex
/// digits of its id.
pub(crate) fn hook_container(hook: &HookRecord) -> String {
    let hex: String = hook
        .id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("hook-{hex}")
}

pub(crate) fn mcp_container(mcp: &McpRecord) -> String {
    format!("mcp-{}", mcp.name)
}

fn env(name: &str, value: impl Into<String>) -> runner_pb::EnvVar {
    runner_pb::EnvVar {
        name: name.to_string(),
        value: value.into(),
        ..Default::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> runner_pb::Mount {
    runner_pb::Mount {
        volume: volume.to_string(),
        mount_path: path.to_string(),
        read_only,
        ..Default::default()
    }
}

fn resources(resources: &Resources) -> runner_pb::ComputeResources {
    runner_pb::ComputeResources {
        requests_cpu: resources.requests_cpu.clone(),
        requests_memory: resources.requests_memory.clone(),
        limits_cpu: resources.limits_cpu.clone(),
        limits_memory: resources.limits_memory.clone(),
        ..Default::default()
    }
}

fn image_or(image: &str, default: &str) -> String {
    if image.is_empty() {
        default.to_string()
    } else {
        image.to_string()
    }
}

/// Builds the request of `input`'s workload. An error is a configuration
/// problem, such as an invalid quantity, and names the offending field.
pub(crate) fn build(mut input: SpecInput<'_>) -> Result<Spec, String> {
    let pull_credentials = std::mem::take(&mut input.pull_credentials);
    Builder::new(&input).finish(pull_credentials)
}

/// The parts of a request while it is put together.
struct Builder<'a> {
    input: &'a SpecInput<'a>,
    inline_files: HashMap<String, Vec<u8>>,
    volumes: Vec<runner_pb::VolumeSpec>,
    ports: Vec<runner_pb::PortSpec>,
    allocation: Allocation,
}

impl<'a> Builder<'a> {
    fn new(input: &'a SpecInput<'a>) -> Self {
        Self {
            input,
            inline_files: HashMap::new(),
            volumes: Vec::new(),
            ports: Vec::new(),
            allocation: Allocation::default(),
        }
    }

    fn finish(
        mut self,
        pull_credentials: Vec<runner_pb::ImagePullCredential>,
    ) -> Result<Spec, String> {
        let input = self.input;
        let bundle = input.bundle;
        let agent = &bundle.agent;
        self.add_volumes();
        let mut mcps: Vec<&McpRecord> = bundle.mcps.iter().collect();
        mcps.sort_by(|a, b| a.id.cmp(&b.id));
        let mut hooks: Vec<&HookRecord> = bundle.hooks.iter().collect();
        hooks.sort_by(|a, b| a.id.cmp(&b.id));

        let mut sidecars = Vec::new();
        let mut mcp_servers = Vec::new();
        for (index, mcp) in mcps.iter().enumerate() {
            let name = mcp_container(mcp);
            self.ports.push(runner_pb::PortSpec {
                name: name.clone(),
                preferred: MCP_PORT_BASE + index as i32,
                ..Default::default()
            });
            mcp_servers.push(format!(
                "{}=http://127.0.0.1:${{port:{name}}}{}",
                mcp.name, mcp.http_path
            ));
            sidecars.push(self.mcp_sidecar(mcp, &name)?);
        }
        let mut hook_urls = Vec::new();
        for (index, hook) in hooks.iter().enumerate() {
            let name = hook_container(hook);
            self.ports.push(runner_pb::PortSpec {
                name: name.clone(),
                preferred: HOOK_PORT_BASE + index as i32,
                ..Default::default()
            });
            hook_urls.push(format!(
                "{}=http://127.0.0.1:${{port:{name}}}/run",
                hook.event.as_str()
            ));
            sidecars.push(self.hook_sidecar(hook, &name)?);
        }

        let mut main = self.main_container(&mcp_servers.join(";"), &hook_urls.join(";"))?;
        for path in [TLS_CERT_FILE, TLS_KEY_FILE, CA_FILE] {
            main.inline_file_paths.push(path.to_string());
        }
        let credential = &input.credential;
        self.inline_files.insert(
            TLS_CERT_FILE.to_string(),
            credential.certificate_pem.as_bytes().to_vec(),
        );
        self.inline_files.insert(
            TLS_KEY_FILE.to_string(),
            credential.private_key_pem.expose().as_bytes().to_vec(),
        );
        self.inline_files
            .insert(CA_FILE.to_string(), credential.ca_pem.as_bytes().to_vec());

        let init = runner_pb::ContainerSpec {
            name: INIT_CONTAINER.to_string(),
            image: image_or(&agent.init_image, &input.config.default_init_image),
            command: vec![
                "agyn".to_string(),
                "install".to_string(),
                BIN_PATH.to_string(),
            ],
            env: vec![env("AGYN_CONTAINER_NAME", INIT_CONTAINER)],
            mounts: vec![mount(BIN_VOLUME, BIN_PATH, false)],
            ..Default::default()
        };

        let (allocated_cpu_millicores, allocated_ram_bytes) = self.allocation.totals()?;
        let mut containers = vec![record_container(
            &init,
            runners_pb::ContainerRole::CONTAINER_ROLE_INIT,
        )];
        containers.push(record_container(
            &main,
            runners_pb::ContainerRole::CONTAINER_ROLE_MAIN,
        ));
        for sidecar in &sidecars {
            containers.push(record_container(
                sidecar,
                runners_pb::ContainerRole::CONTAINER_ROLE_SIDECAR,
            ));
        }
        let request = runner_pb::StartWorkloadRequest {
            workload_id: input.workload_id.to_string(),
            labels: [
                ("agyn.workload_id", input.workload_id),
                ("agyn.thread_id", input.thread_id),
                ("agyn.agent_id", agent.id.as_str()),
                ("agyn.organization_id", agent.organization_id.as_str()),
                (MANAGED_BY_LABEL, MANAGED_BY),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
            init_containers: vec![init],
            main: main.into(),
            sidecars,
            volumes: self.volumes,
            ports: self.ports,
            image_pull_credentials: pull_credentials,
            inline_files: self.inline_files.into_iter().collect(),
            capabilities: agent.capabilities.clone(),
            ..Default::default()
        };
        Ok(Spec {
            request,
            containers,
            allocated_cpu_millicores,
            allocated_ram_bytes,
        })
    }

    /// Declares `agyn-bin`, `workspace` and one volume per attached
    /// definition.
    ///
    /// NOTE: a volume mounted under `/workspace` (not at it) nests in the
    /// scratch workspace, which the built-in runner rejects.
    fn add_volumes(&mut self) {
        let bundle = self.input.bundle;
        self.volumes.push(ephemeral(BIN_VOLUME));
        if !self.agent_mounts_workspace() {
            self.volumes.push(ephemeral(WORKSPACE_VOLUME));
        }
        for volume in &bundle.volumes {
            let name = volume_name(&volume.name);
            let spec = match self.input.volume_keys.get(&volume.id) {
                Some(key) if volume.persistent => runner_pb::VolumeSpec {
                    name,
                    kind: runner_pb::VolumeKind::VOLUME_KIND_NAMED.into(),
                    persistent_name: format!("agyn-vol-{key}"),
                    size: volume.size.clone(),
                    labels: [
                        (VOLUME_ID_LABEL, key.as_str()),
                        ("agyn.volume_definition_id", volume.id.as_str()),
                        ("agyn.thread_id", self.input.thread_id),
                        (MANAGED_BY_LABEL, MANAGED_BY),
                    ]
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
                    ..Default::default()
                },
                _ => ephemeral(&name),
            };
            self.volumes.push(spec);
        }
    }

    /// Returns whether a volume attached to the agent itself is mounted at
    /// `/workspace`, which then replaces the scratch workspace.
    fn agent_mounts_workspace(&self) -> bool {
        self.mounts_of(&Target::Agent(self.input.bundle.agent.id.clone()))
            .iter()
            .any(|mount| mount.mount_path == WORKSPACE_PATH)
    }

    /// Returns the mounts of the volume attachments of `target`.
    fn mounts_of(&self, target: &Target) -> Vec<runner_pb::Mount> {
        let bundle = self.input.bundle;
        bundle
            .volume_attachments
            .iter()
            .filter(|attachment| attachment.target == *target)
            .filter_map(|attachment| {
                let volume = bundle
                    .volumes
                    .iter()
                    .find(|volume| volume.id == attachment.volume_id)?;
                Some(mount(
                    &volume_name(&volume.name),
                    &volume.mount_path,
                    attachment.read_only,
                ))
            })
            .collect()
    }

    /// Returns the environment of `target`'s own variables, in list order.
    fn target_env(&self, target: &Target) -> Vec<runner_pb::EnvVar> {
        self.input
            .bundle
            .envs
            .iter()
            .filter(|record| record.target == *target)
            .filter_map(|record| match &record.source {
                EnvSource::Value(value) => Some(env(&record.name, value.clone())),
                EnvSource::Secret(_) => self
                    .input
                    .secret_env
                    .get(&record.id)
                    .map(|value| env(&record.name, value.expose().clone())),
            })
            .collect()
    }

    /// Adds `target`'s init scripts as inline files of `container` and
    /// returns their paths; `AGYN_INIT_DIR` goes to `env` when there are
    /// any.
    fn add_init_scripts(
        &mut self,
        target: &Target,
        container: &str,
        env_vars: &mut Vec<runner_pb::EnvVar>,
    ) -> Vec<String> {
        let scripts: Vec<&str> = self
            .input
            .bundle
            .init_scripts
            .iter()
            .filter(|script| script.target == *target)
            .map(|script| script.script.as_str())
            .collect();
        if scripts.is_empty() {
            return Vec::new();
        }
        // Wide enough that the file names sort in list order.
        let width = scripts.len().to_string().len().max(3);
        let dir = format!("{BIN_PATH}/init/{container}");
        let mut paths = Vec::with_capacity(scripts.len());
        for (index, script) in scripts.into_iter().enumerate() {
            let path = format!("{dir}/{:0width$}.sh", index + 1);
            self.inline_files
                .insert(path.clone(), script.as_bytes().to_vec());
            paths.push(path);
        }
        env_vars.push(env("AGYN_INIT_DIR", dir));
        paths
    }

    fn main_container(
        &mut self,
        mcp_servers: &str,
        hooks: &str,
    ) -> Result<runner_pb::ContainerSpec, String> {
        let input = self.input;
        let agent = &input.bundle.agent;
        let target = Target::Agent(agent.id.clone());
        let gateway = input.config.gateway_base();
        let mut env_vars = self.target_env(&target);
        env_vars.extend([
            env("AGENT_ID", agent.id.clone()),
            env("AGENT_NAME", agent.name.clone()),
            env("AGENT_ROLE", agent.role.clone()),
            env("AGENT_MODEL", agent.model.clone()),
            env("AGENT_CONFIG", agent.configuration.clone()),
            env("THREAD_ID", input.thread_id),
            env("WORKLOAD_ID", input.workload_id),
            env("ORGANIZATION_ID", agent.organization_id.clone()),
            env("AGYN_GATEWAY_URL", gateway),
            env("AGYN_LLM_BASE_URL", format!("{gateway}/v1")),
            env("AGYN_OTLP_ENDPOINT", gateway),
            env("AGYN_TLS_CERT_FILE", TLS_CERT_FILE),
            env("AGYN_TLS_KEY_FILE", TLS_KEY_FILE),
            env("AGYN_CA_FILE", CA_FILE),
            env("AGENT_MCP_SERVERS", mcp_servers),
            env("AGENT_HOOKS", hooks),
            env("AGYN_CONTAINER_NAME", MAIN_CONTAINER),
        ]);
        let inline_file_paths = self.add_init_scripts(&target, MAIN_CONTAINER, &mut env_vars);
        let mut mounts = vec![mount(BIN_VOLUME, BIN_PATH, true)];
        if !self.agent_mounts_workspace() {
            mounts.push(mount(WORKSPACE_VOLUME, WORKSPACE_PATH, false));
        }
        mounts.extend(self.mounts_of(&target));
        self.allocation.add(
            &format!("agent {} resources", agent.id),
            &agent.resources.requests_cpu,
            &agent.resources.requests_memory,
        )?;
        Ok(runner_pb::ContainerSpec {
            name: MAIN_CONTAINER.to_string(),
            image: image_or(&agent.image, &input.config.default_agent_image),
            command: [AGYN, "launch", "--", AGYN, "agent"]
                .into_iter()
                .map(str::to_string)
                .collect(),
            working_dir: WORKSPACE_PATH.to_string(),
            env: env_vars,
            mounts,
            resources: resources(&agent.resources).into(),
            inline_file_paths,
            ..Default::default()
        })
    }

    fn mcp_sidecar(
        &mut self,
        mcp: &McpRecord,
        name: &str,
    ) -> Result<runner_pb::ContainerSpec, String> {
        let target = Target::Mcp(mcp.id.clone());
        let port = format!("${{port:{name}}}");
        let mut command = vec![AGYN.to_string(), "launch".to_string()];
        if mcp.transport == McpTransport::Stdio {
            command.extend([
                "--mcp-stdio-bridge".to_string(),
                "--port".to_string(),
                port.clone(),
                "--path".to_string(),
                mcp.http_path.clone(),
            ]);
        }
        command.extend([
            "--".to_string(),
            "/bin/sh".to_string(),
            "-c".to_string(),
            mcp.command.clone(),
        ]);
        let mut env_vars = self.target_env(&target);
        env_vars.push(env("MCP_PORT", port));
        env_vars.push(env("AGYN_CONTAINER_NAME", name));
        self.sidecar(
            &target,
            name,
            &mcp.image,
            command,
            env_vars,
            &mcp.resources,
            &format!("mcp {} resources", mcp.id),
        )
    }

    fn hook_sidecar(
        &mut self,
        hook: &HookRecord,
        name: &str,
    ) -> Result<runner_pb::ContainerSpec, String> {
        let target = Target::Hook(hook.id.clone());
        let port = format!("${{port:{name}}}");
        let command = [AGYN, "launch", "--", AGYN, "hook", "serve", "--port", &port]
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut env_vars = self.target_env(&target);
        env_vars.extend([
            env("AGYN_HOOK_FUNCTION", hook.function.clone()),
            env("AGYN_HOOK_TIMEOUT", (hook.timeout_ms / 1000).to_string()),
            env("HOOK_PORT", port.clone()),
            env("AGYN_CONTAINER_NAME", name),
        ]);
        self.sidecar(
            &target,
            name,
            &hook.image,
            command,
            env_vars,
            &hook.resources,
            &format!("hook {} resources", hook.id),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn sidecar(
        &mut self,
        target: &Target,
        name: &str,
        image: &str,
        command: Vec<String>,
        mut env_vars: Vec<runner_pb::EnvVar>,
        requested: &Resources,
        owner: &str,
    ) -> Result<runner_pb::ContainerSpec, String> {
        let inline_file_paths = self.add_init_scripts(target, name, &mut env_vars);
        let mut mounts = vec![mount(BIN_VOLUME, BIN_PATH, true)];
        mounts.extend(self.mounts_of(target));
        self.allocation
            .add(owner, &requested.requests_cpu, &requested.requests_memory)?;
        Ok(runner_pb::ContainerSpec {
            name: name.to_string(),
            image: image_or(image, &self.input.config.default_agent_image),
            command,
            env: env_vars,
            mounts,
            resources: resources(requested).into(),
            inline_file_paths,
            ..Default::default()
        })
    }
}

/// Name of a definition's volume in the spec: `vol-<definition name>`.
fn volume_name(definition_name: &str) -> String {
    format!("vol-{definition_name}")
}

fn ephemeral(name: &str) -> runner_pb::VolumeSpec {
    runner_pb::VolumeSpec {
        name: name.to_string(),
        kind: runner_pb::VolumeKind::VOLUME_KIND_EPHEMERAL.into(),
        ..Default::default()
    }
}

/// Returns the record of a container before the runner reports on it.
fn record_container(
    spec: &runner_pb::ContainerSpec,
    role: runners_pb::ContainerRole,
) -> runners_pb::Container {
    runners_pb::Container {
        name: spec.name.clone(),
        role: role.into(),
        image: spec.image.clone(),
        status: runners_pb::ContainerStatus::CONTAINER_STATUS_WAITING.into(),
        ..Default::default()
    }
}
