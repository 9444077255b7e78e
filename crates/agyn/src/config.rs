//! Configuration: flags, then `AGYN_<KEY>` environment variables, then
//! `<data_dir>/agyn.toml`, then built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// Flags of `agyn serve`. Every flag can also be set by its environment
/// variable or in `<data_dir>/agyn.toml` (same key, with `.` for nesting).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// State directory [default: $XDG_DATA_HOME/agyn or ~/.local/share/agyn].
    #[arg(long, env = "AGYN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://<path> or postgres://... [default: sqlite://<data_dir>/agyn.db].
    #[arg(long, env = "AGYN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Public listener address [default: 127.0.0.1:8080].
    #[arg(long, env = "AGYN_LISTEN")]
    pub listen: Option<String>,
    /// Internal listener address; an empty value disables it [default: 127.0.0.1:8081].
    #[arg(long, env = "AGYN_INTERNAL_LISTEN")]
    pub internal_listen: Option<String>,
    /// External base URL, used for the default CORS origin [default: http://<listen>].
    #[arg(long, env = "AGYN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Comma-separated origins allowed by CORS [default: the origin of --public-url].
    #[arg(long, env = "AGYN_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Log level or tracing filter such as `info` or `agyn=debug` [default: info].
    #[arg(long, env = "AGYN_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "AGYN_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Replace the bootstrap admin's `bootstrap` API token and rewrite `<data_dir>/admin-token`.
    #[arg(long)]
    pub reset_admin_token: bool,
    /// Redis URL (`redis://host:port`) for sharing events between replicas [default: events stay in this process].
    #[arg(long, env = "AGYN_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Base64 of the 32-byte master key that seals the platform CA's key [default: <data_dir>/master.key, created on first start].
    #[arg(long, env = "AGYN_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// PEM certificate chain of the public listener's TLS [default: a certificate issued by the platform CA].
    #[arg(long, env = "AGYN_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "AGYN_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Comma-separated DNS names and IP addresses of the issued listener certificate [default: localhost,127.0.0.1].
    #[arg(long, env = "AGYN_TLS_HOSTNAMES", value_delimiter = ',')]
    pub tls_hostnames: Option<Vec<String>>,
    /// Storage of file contents: `local` (under <data_dir>/files) or `s3` [default: local].
    #[arg(long, env = "AGYN_FILES_BACKEND")]
    pub files_backend: Option<String>,
    /// S3 bucket for file contents (with --files-backend s3).
    #[arg(long, env = "AGYN_FILES_S3_BUCKET")]
    pub files_s3_bucket: Option<String>,
    /// Endpoint of an S3-compatible server, such as http://127.0.0.1:9000 [default: AWS].
    #[arg(long, env = "AGYN_FILES_S3_ENDPOINT")]
    pub files_s3_endpoint: Option<String>,
    /// S3 region [default: the AWS_REGION environment variable, else us-east-1].
    #[arg(long, env = "AGYN_FILES_S3_REGION")]
    pub files_s3_region: Option<String>,
    /// S3 access key id [default: the AWS environment variables].
    #[arg(long, env = "AGYN_FILES_S3_ACCESS_KEY_ID")]
    pub files_s3_access_key_id: Option<String>,
    /// S3 secret access key [default: the AWS environment variables].
    #[arg(long, env = "AGYN_FILES_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub files_s3_secret_access_key: Option<String>,
    /// Largest file UploadFile accepts, in bytes [default: 20971520].
    #[arg(long, env = "AGYN_FILES_MAX_UPLOAD_BYTES")]
    pub files_max_upload_bytes: Option<u64>,
    /// How long spans are kept, such as 14d, 36h or 3600s [default: 14d].
    #[arg(long, env = "AGYN_TRACING_RETENTION")]
    pub tracing_retention: Option<String>,
    /// Run the built-in runner in this process, which runs workloads as local processes [default: true].
    #[arg(long, env = "AGYN_RUNNER_BUILTIN", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub runner_builtin: Option<bool>,
    /// Gateway URL that workloads call, over https because workloads authenticate with their client certificate [default: https://127.0.0.1:<port of --listen>].
    #[arg(long, env = "AGYN_WORKLOAD_GATEWAY_URL")]
    pub workload_gateway_url: Option<String>,
    #[command(flatten)]
    pub oidc: OidcArgs,
    #[command(flatten)]
    pub orchestrator: OrchestratorArgs,
}

/// Orchestrator flags of `agyn serve`, in the `[orchestrator]` table of
/// `agyn.toml` without the `orchestrator_` prefix. Durations are a number
/// with s, m, h or d, such as 10s.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Orchestrator")]
pub struct OrchestratorArgs {
    /// Interval of the start pass and the idle check [default: 10s].
    #[arg(long, env = "AGYN_ORCHESTRATOR_POLL_INTERVAL")]
    pub orchestrator_poll_interval: Option<String>,
    /// Interval of the workload reconciliation of each runner [default: 15s].
    #[arg(long, env = "AGYN_ORCHESTRATOR_RECONCILE_INTERVAL")]
    pub orchestrator_reconcile_interval: Option<String>,
    /// Comma-separated delays after the 1st, 2nd, ... consecutive failed start; the last repeats [default: 10s,30s,1m,5m,15m].
    #[arg(long, env = "AGYN_ORCHESTRATOR_BACKOFF", value_delimiter = ',')]
    pub orchestrator_backoff: Option<Vec<String>>,
    /// Consecutive failed starts after which the thread is degraded [default: 10].
    #[arg(long, env = "AGYN_ORCHESTRATOR_MAX_ATTEMPTS")]
    pub orchestrator_max_attempts: Option<u32>,
    /// Time a workload may stay STARTING before it fails with START_TIMEOUT [default: 300s].
    #[arg(long, env = "AGYN_ORCHESTRATOR_START_TIMEOUT")]
    pub orchestrator_start_timeout: Option<String>,
    /// Age after which a STARTING workload that its runner does not have fails [default: 30s].
    #[arg(long, env = "AGYN_ORCHESTRATOR_MISSING_GRACE")]
    pub orchestrator_missing_grace: Option<String>,
}

/// OIDC sign-in flags of `agyn serve`, in the `[oidc]` table of
/// `agyn.toml` without the `oidc_` prefix.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "OIDC sign-in")]
pub struct OidcArgs {
    /// Issuer URL: https, or http on a loopback host. Unset or empty disables OIDC sign-in.
    #[arg(long, env = "AGYN_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Value that the access token's `aud` claim must contain [default: any audience].
    #[arg(long, env = "AGYN_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Source of a new user's profile: `token` (the access token's claims) or `userinfo` [default: userinfo].
    #[arg(long, env = "AGYN_OIDC_PROFILE_SOURCE")]
    pub oidc_profile_source: Option<String>,
    /// Claim with the user's display name [default: name].
    #[arg(long, env = "AGYN_OIDC_CLAIM_NAME")]
    pub oidc_claim_name: Option<String>,
    /// Claim with the user's email address [default: email].
    #[arg(long, env = "AGYN_OIDC_CLAIM_EMAIL")]
    pub oidc_claim_email: Option<String>,
    /// Claim with the URL of the user's picture [default: picture].
    #[arg(long, env = "AGYN_OIDC_CLAIM_PICTURE")]
    pub oidc_claim_picture: Option<String>,
    /// Claim from which the username is derived [default: preferred_username].
    #[arg(long, env = "AGYN_OIDC_CLAIM_USERNAME")]
    pub oidc_claim_username: Option<String>,
    /// Boolean claim that the email address is verified [default: email_verified].
    #[arg(long, env = "AGYN_OIDC_CLAIM_EMAIL_VERIFIED")]
    pub oidc_claim_email_verified: Option<String>,
}

/// Keys read from `<data_dir>/agyn.toml`.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    redis_url: Option<String>,
    listen: Option<String>,
    internal_listen: Option<String>,
    public_url: Option<String>,
    cors: Option<CorsFile>,
    log: Option<LogFile>,
    tls: Option<TlsFile>,
    oidc: Option<OidcFile>,
    runner: Option<RunnerFile>,
    files: Option<FilesFile>,
    tracing: Option<TracingFile>,
    workload_gateway_url: Option<String>,
    orchestrator: Option<OrchestratorFile>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct OrchestratorFile {
    poll_interval: Option<String>,
    reconcile_interval: Option<String>,
    backoff: Option<Vec<String>>,
    max_attempts: Option<u32>,
    start_timeout: Option<String>,
    missing_grace: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FilesFile {
    backend: Option<String>,
    max_upload_bytes: Option<u64>,
    s3: Option<S3File>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct S3File {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct TracingFile {
    retention: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    builtin: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    hostnames: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct CorsFile {
    allowed_origins: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct OidcFile {
    issuer: Option<String>,
    audience: Option<String>,
    profile_source: Option<String>,
    claim_name: Option<String>,
    claim_email: Option<String>,
    claim_picture: Option<String>,
    claim_username: Option<String>,
    claim_email_verified: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of `agyn serve`.
#[derive(Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub listen: SocketAddr,
    pub internal_listen: Option<SocketAddr>,
    pub cors_allowed_origins: Vec<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub reset_admin_token: bool,
    /// Redis for events shared between replicas; `None` keeps events in
    /// this process.
    pub redis_url: Option<agyn_core::Secret<String>>,
    /// Base64 master key from the flag or environment; `None` reads or
    /// creates `<data_dir>/master.key`.
    pub master_key: Option<agyn_core::Secret<String>>,
    /// Certificate of the public listener's TLS.
    pub tls: agyn_pki::ServerCertificate,
    /// `None` when no OIDC issuer is configured.
    pub oidc: Option<agyn_oidc::OidcConfig>,
    /// Whether this process runs the built-in runner, whose state lives
    /// in `<data_dir>/runner`.
    pub runner_builtin: bool,
    /// External base URL that download links start with.
    pub public_url: String,
    /// The S3 store of file contents, or `None` for `<data_dir>/files`.
    pub files_s3: Option<agyn_files::S3Settings>,
    pub files_max_upload_bytes: u64,
    /// Age after which spans are deleted.
    pub tracing_retention: std::time::Duration,
    /// Orchestrator timings and the gateway URL given to workloads.
    pub orchestrator: agyn_orchestrator::OrchestratorConfig,
}

impl Config {
    pub fn resolve(args: ServeArgs) -> Result<Self, String> {
        let data_dir = match args.data_dir {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let file = read_file_config(&data_dir)?;
        let database_url = args
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("agyn.db").display()));
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen = parse_address("listen", &listen)?;
        let internal_listen = args
            .internal_listen
            .or(file.internal_listen)
            .unwrap_or_else(|| "127.0.0.1:8081".to_string());
        let internal_listen = if internal_listen.is_empty() {
            None
        } else {
            Some(parse_address("internal_listen", &internal_listen)?)
        };
        let public_url = args
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(format!(
                "invalid public_url {public_url:?}: expected http://host[:port] or https://host[:port]"
            ));
        }
        let cors_allowed_origins = args
            .cors_allowed_origins
            .or(file.cors.and_then(|cors| cors.allowed_origins))
            .unwrap_or_else(|| vec![origin_of(&public_url)]);
        let log = file.log.unwrap_or_default();
        let log_level = args
            .log_level
            .or(log.level)
            .unwrap_or_else(|| "info".to_string());
        validate_log_level(&log_level)?;
        let log_format = match args.log_format.or(log.format) {
            None => LogFormat::Text,
            Some(format) => parse_log_format(&format)?,
        };
        let tls_file = file.tls.unwrap_or_default();
        let tls = match (
            args.tls_cert_file.or(tls_file.cert_file),
            args.tls_key_file.or(tls_file.key_file),
        ) {
            (Some(cert_file), Some(key_file)) => agyn_pki::ServerCertificate::Files {
                cert_file,
                key_file,
            },
            (None, None) => match args.tls_hostnames.or(tls_file.hostnames) {
                Some(hostnames) if !hostnames.is_empty() => {
                    agyn_pki::ServerCertificate::Issue { hostnames }
                }
                _ => agyn_pki::ServerCertificate::default(),
            },
            _ => return Err("tls_cert_file and tls_key_file must be set together".to_string()),
        };
        let redis_url = args
            .redis_url
            .or(file.redis_url)
            .filter(|url| !url.is_empty())
            .map(agyn_core::Secret::new);
        if let Some(url) = &redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return Err("invalid redis_url: expected redis://host[:port][/db]".to_string());
        }
        let master_key = args
            .master_key
            .filter(|key| !key.is_empty())
            .map(agyn_core::Secret::new);
        let oidc = resolve_oidc(args.oidc, file.oidc.unwrap_or_default())?;
        let runner_builtin = args
            .runner_builtin
            .or(file.runner.and_then(|runner| runner.builtin))
            .unwrap_or(true);
        let files_file = file.files.unwrap_or_default();
        let s3_file = files_file.s3.unwrap_or_default();
        let files_s3 = match args
            .files_backend
            .or(files_file.backend)
            .as_deref()
            .unwrap_or("local")
        {
            "local" => None,
            "s3" => Some(agyn_files::S3Settings {
                bucket: args
                    .files_s3_bucket
                    .or(s3_file.bucket)
                    .filter(|bucket| !bucket.is_empty())
                    .ok_or("files_backend s3 needs files_s3_bucket")?,
                endpoint: args.files_s3_endpoint.or(s3_file.endpoint),
                region: args.files_s3_region.or(s3_file.region),
                access_key_id: args.files_s3_access_key_id.or(s3_file.access_key_id),
                secret_access_key: args
                    .files_s3_secret_access_key
                    .or(s3_file.secret_access_key)
                    .map(agyn_core::Secret::new),
            }),
            other => {
                return Err(format!("invalid files_backend {other:?}: use local or s3"));
            }
        };
        let files_max_upload_bytes = args
            .files_max_upload_bytes
            .or(files_file.max_upload_bytes)
            .unwrap_or(agyn_files::DEFAULT_MAX_UPLOAD_BYTES);
        if files_max_upload_bytes == 0 {
            return Err("files_max_upload_bytes must be at least 1".to_string());
        }
        let tracing_retention = match args
            .tracing_retention
            .or(file.tracing.and_then(|tracing| tracing.retention))
        {
            Some(text) => parse_duration("tracing_retention", &text)?,
            None => agyn_tracing::DEFAULT_RETENTION,
        };
        let workload_gateway_url = args
            .workload_gateway_url
            .or(file.workload_gateway_url)
            .unwrap_or_else(|| format!("https://127.0.0.1:{}", listen.port()));
        let orchestrator = resolve_orchestrator(
            args.orchestrator,
            file.orchestrator.unwrap_or_default(),
            workload_gateway_url,
        )?;
        Ok(Self {
            data_dir,
            database_url,
            listen,
            internal_listen,
            cors_allowed_origins,
            log_level,
            log_format,
            reset_admin_token: args.reset_admin_token,
            redis_url,
            master_key,
            tls,
            oidc,
            runner_builtin,
            public_url,
            files_s3,
            files_max_upload_bytes,
            tracing_retention,
            orchestrator,
        })
    }
}

/// Layers the orchestrator flags over the `[orchestrator]` table and the
/// defaults.
fn resolve_orchestrator(
    args: OrchestratorArgs,
    file: OrchestratorFile,
    workload_gateway_url: String,
) -> Result<agyn_orchestrator::OrchestratorConfig, String> {
    let valid_url = workload_gateway_url
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty());
    if !valid_url {
        return Err(format!(
            "invalid workload_gateway_url {workload_gateway_url:?}: expected https://host[:port], \
             because workloads authenticate with their client certificate over TLS"
        ));
    }
    let mut config = agyn_orchestrator::OrchestratorConfig {
        workload_gateway_url,
        ..Default::default()
    };
    let durations = [
        (
            "orchestrator_poll_interval",
            args.orchestrator_poll_interval.or(file.poll_interval),
            &mut config.poll_interval,
        ),
        (
            "orchestrator_reconcile_interval",
            args.orchestrator_reconcile_interval
                .or(file.reconcile_interval),
            &mut config.reconcile_interval,
        ),
        (
            "orchestrator_start_timeout",
            args.orchestrator_start_timeout.or(file.start_timeout),
            &mut config.start_timeout,
        ),
        (
            "orchestrator_missing_grace",
            args.orchestrator_missing_grace.or(file.missing_grace),
            &mut config.missing_grace,
        ),
    ];
    for (key, text, value) in durations {
        if let Some(text) = text {
            *value = parse_duration(key, &text)?;
        }
    }
    if let Some(delays) = args.orchestrator_backoff.or(file.backoff) {
        if delays.is_empty() {
            return Err(
                "invalid orchestrator_backoff: name at least one delay, such as 10s".into(),
            );
        }
        config.backoff_schedule = delays
            .iter()
            .map(|delay| parse_duration("orchestrator_backoff", delay.trim()))
            .collect::<Result<_, _>>()?;
    }
    if let Some(max_attempts) = args.orchestrator_max_attempts.or(file.max_attempts) {
        if max_attempts == 0 {
            return Err("orchestrator_max_attempts must be at least 1".to_string());
        }
        config.max_attempts = max_attempts;
    }
    Ok(config)
}

/// Parses a duration such as `14d`, `36h`, `90m` or `3600s`.
fn parse_duration(key: &str, text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid {key} {text:?}: use a number with s, m, h or d, such as 14d");
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    match number.checked_mul(seconds) {
        Some(total) if total > 0 => Ok(std::time::Duration::from_secs(total)),
        _ => Err(invalid()),
    }
}

/// Layers the OIDC flags over the `[oidc]` table. An unset or empty
/// issuer turns OIDC sign-in off, and an empty audience accepts any.
fn resolve_oidc(args: OidcArgs, file: OidcFile) -> Result<Option<agyn_oidc::OidcConfig>, String> {
    let issuer = args.oidc_issuer.or(file.issuer).unwrap_or_default();
    if issuer.is_empty() {
        return Ok(None);
    }
    let mut config = agyn_oidc::OidcConfig::new(issuer);
    config.audience = args
        .oidc_audience
        .or(file.audience)
        .filter(|audience| !audience.is_empty());
    if let Some(source) = args.oidc_profile_source.or(file.profile_source) {
        config.profile_source = agyn_oidc::ProfileSource::parse(&source).ok_or_else(|| {
            format!("invalid oidc_profile_source {source:?}: use token or userinfo")
        })?;
    }
    let claims = [
        (
            args.oidc_claim_name.or(file.claim_name),
            &mut config.claims.name,
        ),
        (
            args.oidc_claim_email.or(file.claim_email),
            &mut config.claims.email,
        ),
        (
            args.oidc_claim_picture.or(file.claim_picture),
            &mut config.claims.picture,
        ),
        (
            args.oidc_claim_username.or(file.claim_username),
            &mut config.claims.username,
        ),
        (
            args.oidc_claim_email_verified.or(file.claim_email_verified),
            &mut config.claims.email_verified,
        ),
    ];
    for (value, claim) in claims {
        if let Some(value) = value {
            *claim = value;
        }
    }
    config.validate().map_err(|error| error.to_string())?;
    Ok(Some(config))
}

/// Accepts a level (`trace` ... `error`, `off`) or a `tracing` filter with
/// targets such as `info,agyn=debug`. A bare word that is not a level is
/// rejected: the filter would read it as a target and log nothing else.
fn validate_log_level(value: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let is_filter = value.contains('=') || value.contains(',');
    if is_filter || LEVELS.contains(&value.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    Err(format!(
        "invalid log level {value:?}: use trace, debug, info, warn, error, off or a filter such as info,agyn=debug"
    ))
}

fn default_data_dir() -> Result<PathBuf, String> {
    default_dir("agyn")
}

/// Returns `$XDG_DATA_HOME/<name>`, or `~/.local/share/<name>`.
pub fn default_dir(name: &str) -> Result<PathBuf, String> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return Ok(PathBuf::from(xdg).join(name));
    }
    let home = std::env::var_os("HOME")
        .filter(|value| !value.is_empty())
        .ok_or("cannot find a data directory: set --data-dir, AGYN_DATA_DIR or HOME")?;
    Ok(PathBuf::from(home).join(".local/share").join(name))
}

fn read_file_config(data_dir: &Path) -> Result<FileConfig, String> {
    let path = data_dir.join("agyn.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|error| format!("invalid {}: {error}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(error) => Err(format!("failed to read {}: {error}", path.display())),
    }
}

fn parse_address(key: &str, value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("invalid {key} address {value:?}: expected an IP address and port such as 127.0.0.1:8080")
    })
}

/// Returns `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        None => url.to_string(),
    }
}

/// Installs the global `tracing` subscriber.
pub fn init_logging(config: &Config) -> Result<(), String> {
    install_logger(&config.log_level, config.log_format)
}

/// Parses a log format name: `text` or `json`.
pub fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("invalid log format {other:?}: use text or json")),
    }
}

/// Installs the global `tracing` subscriber at `level` (checked as
/// `log_level` is) in `format`.
pub fn install_logger(level: &str, format: LogFormat) -> Result<(), String> {
    validate_log_level(level)?;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|error| format!("invalid log level {level:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| format!("failed to install the logger: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_in(dir: &Path) -> ServeArgs {
        ServeArgs {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_use_data_dir() {
        let dir = std::env::temp_dir().join(format!("agyn-config-{}", std::process::id()));
        let config = Config::resolve(args_in(&dir)).unwrap();
        assert_eq!(
            config.database_url,
            format!("sqlite://{}/agyn.db", dir.display())
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.internal_listen.unwrap().to_string(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            config.cors_allowed_origins,
            vec!["http://127.0.0.1:8080".to_string()]
        );
        assert!(config.runner_builtin);
    }

    #[test]
    fn builtin_runner_can_be_turned_off() {
        let dir = std::env::temp_dir().join(format!("agyn-config-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agyn.toml"), "[runner]\nbuiltin = false\n").unwrap();
        assert!(!Config::resolve(args_in(&dir)).unwrap().runner_builtin);
        let mut args = args_in(&dir);
        args.runner_builtin = Some(true);
        assert!(Config::resolve(args).unwrap().runner_builtin);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_is_below_flags() {
        let dir = std::env::temp_dir().join(format!("agyn-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("agyn.toml"),
            "listen = \"127.0.0.1:9000\"\ninternal_listen = \"\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let config = Config::resolve(args_in(&dir)).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.internal_listen, None);
        assert_eq!(config.log_format, LogFormat::Json);
        let mut args = args_in(&dir);
        args.listen = Some("127.0.0.1:9100".into());
        assert_eq!(
            Config::resolve(args).unwrap().listen.to_string(),
            "127.0.0.1:9100"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_rejected() {
        let dir = std::env::temp_dir().join("agyn-config-bad");
        let mut args = args_in(&dir);
        args.listen = Some("nope".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(error.contains("invalid listen address \"nope\""), "{error}");

        let mut args = args_in(&dir);
        args.log_level = Some("inf".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(error.starts_with("invalid log level \"inf\""), "{error}");

        let mut args = args_in(&dir);
        args.public_url = Some("nope".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(error.starts_with("invalid public_url \"nope\""), "{error}");
    }

    #[test]
    fn log_filters_with_targets_are_accepted() {
        assert!(validate_log_level("info,agyn=debug").is_ok());
        assert!(validate_log_level("WARN").is_ok());
        assert!(validate_log_level("sqlx=warn").is_ok());
    }

    #[test]
    fn oidc_is_off_without_an_issuer() {
        let dir = std::env::temp_dir().join("agyn-config-no-oidc");
        assert_eq!(Config::resolve(args_in(&dir)).unwrap().oidc, None);
        let mut args = args_in(&dir);
        args.oidc.oidc_issuer = Some(String::new());
        args.oidc.oidc_audience = Some("agyn".into());
        assert_eq!(Config::resolve(args).unwrap().oidc, None);
    }

    #[test]
    fn oidc_flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("agyn-config-oidc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("agyn.toml"),
            "[oidc]\nissuer = \"https://id.example.com\"\naudience = \"agyn\"\nprofile_source = \"token\"\nclaim_username = \"login\"\n",
        )
        .unwrap();
        let oidc = Config::resolve(args_in(&dir)).unwrap().oidc.unwrap();
        assert_eq!(oidc.issuer, "https://id.example.com");
        assert_eq!(oidc.audience.as_deref(), Some("agyn"));
        assert_eq!(oidc.profile_source, agyn_oidc::ProfileSource::Token);
        assert_eq!(oidc.claims.username, "login");
        assert_eq!(oidc.claims.name, "name");
        assert_eq!(oidc.claims.email_verified, "email_verified");

        let mut args = args_in(&dir);
        args.oidc.oidc_issuer = Some("http://127.0.0.1:9000/realms/agyn".into());
        args.oidc.oidc_audience = Some(String::new());
        args.oidc.oidc_claim_email = Some("mail".into());
        let oidc = Config::resolve(args).unwrap().oidc.unwrap();
        assert_eq!(oidc.issuer, "http://127.0.0.1:9000/realms/agyn");
        assert_eq!(oidc.audience, None);
        assert_eq!(oidc.claims.email, "mail");
        assert_eq!(oidc.claims.username, "login");

        std::fs::write(dir.join("agyn.toml"), "[oidc]\nissuer_url = \"x\"\n").unwrap();
        let error = Config::resolve(args_in(&dir)).unwrap_err();
        assert!(error.contains("unknown field `issuer_url`"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_oidc_values_are_rejected() {
        let dir = std::env::temp_dir().join("agyn-config-bad-oidc");
        let mut args = args_in(&dir);
        args.oidc.oidc_issuer = Some("http://id.example.com".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(error.starts_with("invalid oidc_issuer"), "{error}");

        let mut args = args_in(&dir);
        args.oidc.oidc_issuer = Some("https://id.example.com".into());
        args.oidc.oidc_profile_source = Some("id_token".into());
        let error = Config::resolve(args).unwrap_err();
        assert_eq!(
            error,
            "invalid oidc_profile_source \"id_token\": use token or userinfo"
        );

        let mut args = args_in(&dir);
        args.oidc.oidc_issuer = Some("https://id.example.com".into());
        args.oidc.oidc_claim_picture = Some(String::new());
        let error = Config::resolve(args).unwrap_err();
        assert_eq!(error, "invalid oidc_claim_picture \"\": name a claim");
    }

    #[test]
    fn orchestrator_settings_layer_flags_over_the_file() {
        let dir = std::env::temp_dir().join(format!("agyn-config-orch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config::resolve(args_in(&dir)).unwrap().orchestrator;
        assert_eq!(config.workload_gateway_url, "https://127.0.0.1:8080");
        assert_eq!(config.poll_interval.as_secs(), 10);
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.backoff_schedule.len(), 5);

        std::fs::write(
            dir.join("agyn.toml"),
            "workload_gateway_url = \"https://agyn.internal:8443\"\n\
             [orchestrator]\npoll_interval = \"5s\"\nbackoff = [\"1s\", \"2m\"]\nmax_attempts = 4\n",
        )
        .unwrap();
        let config = Config::resolve(args_in(&dir)).unwrap().orchestrator;
        assert_eq!(config.workload_gateway_url, "https://agyn.internal:8443");
        assert_eq!(config.poll_interval.as_secs(), 5);
        let backoff: Vec<u64> = config
            .backoff_schedule
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(backoff, [1, 120]);
        assert_eq!(config.max_attempts, 4);

        let mut args = args_in(&dir);
        args.orchestrator.orchestrator_poll_interval = Some("2s".into());
        args.orchestrator.orchestrator_backoff = Some(vec!["3s".into()]);
        args.orchestrator.orchestrator_start_timeout = Some("1m".into());
        args.orchestrator.orchestrator_missing_grace = Some("45s".into());
        args.orchestrator.orchestrator_reconcile_interval = Some("20s".into());
        let config = Config::resolve(args).unwrap().orchestrator;
        assert_eq!(config.poll_interval.as_secs(), 2);
        assert_eq!(config.backoff_schedule, [std::time::Duration::from_secs(3)]);
        assert_eq!(config.start_timeout.as_secs(), 60);
        assert_eq!(config.missing_grace.as_secs(), 45);
        assert_eq!(config.reconcile_interval.as_secs(), 20);
        assert_eq!(config.max_attempts, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_orchestrator_values_are_rejected() {
        let dir = std::env::temp_dir().join("agyn-config-bad-orch");
        let mut args = args_in(&dir);
        args.workload_gateway_url = Some("http://127.0.0.1:8080".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(
            error.starts_with("invalid workload_gateway_url \"http://127.0.0.1:8080\""),
            "{error}"
        );

        let mut args = args_in(&dir);
        args.orchestrator.orchestrator_backoff = Some(vec!["10s".into(), "soon".into()]);
        let error = Config::resolve(args).unwrap_err();
        assert!(
            error.starts_with("invalid orchestrator_backoff \"soon\""),
            "{error}"
        );

        let mut args = args_in(&dir);
        args.orchestrator.orchestrator_max_attempts = Some(0);
        let error = Config::resolve(args).unwrap_err();
        assert_eq!(error, "orchestrator_max_attempts must be at least 1");

        let mut args = args_in(&dir);
        args.orchestrator.orchestrator_poll_interval = Some("0s".into());
        let error = Config::resolve(args).unwrap_err();
        assert!(
            error.starts_with("invalid orchestrator_poll_interval \"0s\""),
            "{error}"
        );
    }

    #[test]
    fn workload_gateway_url_follows_listen() {
        let dir = std::env::temp_dir().join("agyn-config-gateway");
        let mut args = args_in(&dir);
        args.listen = Some("0.0.0.0:9443".into());
        let config = Config::resolve(args).unwrap();
        assert_eq!(
            config.orchestrator.workload_gateway_url,
            "https://127.0.0.1:9443"
        );
    }

    #[test]
    fn public_url_follows_listen() {
        let dir = std::env::temp_dir().join("agyn-config-listen");
        let mut args = args_in(&dir);
        args.listen = Some("127.0.0.1:9300".into());
        let config = Config::resolve(args).unwrap();
        assert_eq!(
            config.cors_allowed_origins,
            vec!["http://127.0.0.1:9300".to_string()]
        );
    }
}
