//! Checks of request fields. Each error names the field.

use agyn_core::text::display_name;
use agyn_core::{Error, Result};

use crate::model::Resources;

pub const AGENT_NAME_MAX_CHARS: usize = 64;
pub const ROLE_MAX_CHARS: usize = 64;
pub const DESCRIPTION_MAX_CHARS: usize = 1_024;
pub const CONFIGURATION_MAX_BYTES: usize = 64 * 1024;
pub const MAX_CAPABILITIES: usize = 16;
pub const COMMAND_MAX_CHARS: usize = 4_096;
pub const SKILL_NAME_MAX_CHARS: usize = 64;
pub const SKILL_BODY_MAX_BYTES: usize = 256 * 1024;
pub const ENV_NAME_MAX_CHARS: usize = 128;
pub const ENV_VALUE_MAX_BYTES: usize = 32 * 1024;
pub const INIT_SCRIPT_MAX_BYTES: usize = 64 * 1024;

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

pub const IDLE_TIMEOUT_DEFAULT_MS: i64 = 300 * SECOND_MS;
pub const TOOL_TIMEOUT_DEFAULT_MS: i64 = 120 * SECOND_MS;
pub const HOOK_TIMEOUT_DEFAULT_MS: i64 = 60 * SECOND_MS;
pub const HTTP_PATH_DEFAULT: &str = "/mcp";

/// Env names that the platform sets itself, besides every name starting
/// with `AGYN_` or `AGENT_`.
const RESERVED_ENV_NAMES: [&str; 5] = [
    "THREAD_ID",
    "WORKLOAD_ID",
    "ORGANIZATION_ID",
    "MCP_PORT",
    "HOOK_PORT",
];

/// Directory where the init container puts the `agyn` binary; no volume
/// may be mounted on or under it.
const AGYN_BIN_DIR: &str = "/agyn-bin";

pub fn agent_name(name: &str) -> Result<&str> {
    display_name("name", name, AGENT_NAME_MAX_CHARS)
}

/// Checks a nickname: 1 to 32 characters of `[a-z0-9_-]`.
pub fn nickname(nickname: &str) -> Result<&str> {
    let valid = (1..=32).contains(&nickname.len())
        && nickname.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte)
        });
    if !valid {
        return Err(Error::invalid_field(
            "nickname",
            "must be 1 to 32 characters of [a-z0-9_-]",
        ));
    }
    Ok(nickname)
}

/// Checks free text of at most `max_chars` characters without NUL.
pub fn text<'a>(field: &str, value: &'a str, max_chars: usize) -> Result<&'a str> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {max_chars} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid_field(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(value)
}

pub fn description(value: &str) -> Result<&str> {
    text("description", value, DESCRIPTION_MAX_CHARS)
}

/// Checks required text: 1 to `max_chars` characters without NUL.
pub fn required_text<'a>(field: &str, value: &'a str, max_chars: usize) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    text(field, value, max_chars)
}

/// Checks text measured in bytes: at most `max_bytes`, and at least one
/// byte when `required`.
pub fn sized<'a>(field: &str, value: &'a str, max_bytes: usize, required: bool) -> Result<&'a str> {
    if required && value.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if value.len() > max_bytes {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {max_bytes} bytes"),
        ));
    }
    Ok(value)
}

/// Checks an agent configuration: a JSON object of at most 64 KiB whose
/// keys read by the built-in agent have valid types and ranges. An empty
/// string stands for `{}`.
pub fn configuration(value: &str) -> Result<&str> {
    if value.is_empty() {
        return Ok("{}");
    }
    sized("configuration", value, CONFIGURATION_MAX_BYTES, true)?;
    agyn_core::agent_config::AgentConfig::parse(value)
        .map_err(|problem| Error::invalid_field("configuration", &problem))?;
    Ok(value)
}

/// Checks the capability list: at most 16, each matching
/// `^[a-z0-9][a-z0-9_-]{0,31}$`.
pub fn capabilities(values: &[String]) -> Result<()> {
    if values.len() > MAX_CAPABILITIES {
        return Err(Error::invalid_field(
            "capabilities",
            &format!("must contain at most {MAX_CAPABILITIES} entries"),
        ));
    }
    for (index, value) in values.iter().enumerate() {
        let bytes = value.as_bytes();
        let valid = (1..=32).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes.iter().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(byte)
            });
        if !valid {
            return Err(Error::invalid_field(
                &format!("capabilities[{index}]"),
                "must match ^[a-z0-9][a-z0-9_-]{0,31}$",
            ));
        }
        if values[..index].contains(value) {
            return Err(Error::invalid_field(
                &format!("capabilities[{index}]"),
                &format!("{value:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Checks a duration in milliseconds against an inclusive range.
pub fn duration_in(field: &str, value_ms: i64, min_ms: i64, max_ms: i64) -> Result<i64> {
    if !(min_ms..=max_ms).contains(&value_ms) {
        return Err(Error::invalid_field(
            field,
            &format!(
                "must be between {} and {}",
                describe_ms(min_ms),
                describe_ms(max_ms)
            ),
        ));
    }
    Ok(value_ms)
}

fn describe_ms(value_ms: i64) -> String {
    if value_ms % HOUR_MS == 0 {
        format!("{} h", value_ms / HOUR_MS)
    } else if value_ms % SECOND_MS == 0 {
        format!("{} s", value_ms / SECOND_MS)
    } else {
        format!("{value_ms} ms")
    }
}

pub fn idle_timeout(value_ms: i64) -> Result<i64> {
    duration_in("idle_timeout", value_ms, 30 * SECOND_MS, 24 * HOUR_MS)
}

pub fn tool_timeout(value_ms: i64) -> Result<i64> {
    duration_in("tool_timeout", value_ms, SECOND_MS, HOUR_MS)
}

pub fn hook_timeout(value_ms: i64) -> Result<i64> {
    duration_in("timeout", value_ms, SECOND_MS, 600 * SECOND_MS)
}

/// Converts a protobuf duration to whole milliseconds, rejecting negative
/// and malformed values. Sub-millisecond parts are dropped.
pub fn duration_ms(field: &str, seconds: i64, nanos: i32) -> Result<i64> {
    if seconds < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(Error::invalid_field(
            field,
            "must be a non-negative duration",
        ));
    }
    seconds
        .checked_mul(SECOND_MS)
        .and_then(|ms| ms.checked_add(i64::from(nanos) / 1_000_000))
        .ok_or_else(|| Error::invalid_field(field, "is too long"))
}

/// Parses a Kubernetes-style quantity (`500m`, `2`, `1.5`, `512Mi`, `4Gi`,
/// `1G`) into base units. Returns `None` for malformed text.
pub fn parse_quantity(value: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("", 1.0),
    ];
    let (number, multiplier) = SUFFIXES.iter().find_map(|(suffix, multiplier)| {
        value
            .strip_suffix(suffix)
            .map(|number| (number, *multiplier))
    })?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || number.ends_with('.') {
        return None;
    }
    number.parse::<f64>().ok().map(|parsed| parsed * multiplier)
}

/// Checks one quantity field; empty means none.
pub fn quantity(field: &str, value: &str) -> Result<Option<f64>> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_quantity(value).map(Some).ok_or_else(|| {
        Error::invalid_field(
            field,
            &format!("{value:?} is not a quantity such as 500m, 2, 512Mi or 4Gi"),
        )
    })
}

/// Checks compute resources: every quantity well formed and no request
/// above its limit. `field` is the request field, such as `resources`.
pub fn resources(field: &str, resources: &Resources) -> Result<()> {
    let pairs = [
        ("cpu", &resources.requests_cpu, &resources.limits_cpu),
        (
            "memory",
            &resources.requests_memory,
            &resources.limits_memory,
        ),
    ];
    for (kind, request, limit) in pairs {
        let request_value = quantity(&format!("{field}.requests_{kind}"), request)?;
        let limit_value = quantity(&format!("{field}.limits_{kind}"), limit)?;
        // Workload records count CPU in 32-bit millicores and memory in
        // 64-bit bytes.
        let ceiling = match kind {
            "cpu" => f64::from(i32::MAX) / 1000.0,
            _ => i64::MAX as f64,
        };
        for (name, value, text) in [
            ("requests", request_value, request),
            ("limits", limit_value, limit),
        ] {
            if value.is_some_and(|value| value > ceiling) {
                return Err(Error::invalid_field(
                    &format!("{field}.{name}_{kind}"),
                    &format!("{text} is larger than a workload can be given"),
                ));
            }
        }
        if let (Some(request_value), Some(limit_value)) = (request_value, limit_value)
            && request_value > limit_value
        {
            return Err(Error::invalid_field(
                &format!("{field}.requests_{kind}"),
                &format!("{request} is above the limit {limit}"),
            ));
        }
    }
    Ok(())
}

/// Checks an MCP server name: `^[a-z][a-z0-9_]{0,62}$`.
pub fn mcp_name(name: &str) -> Result<&str> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'_');
    if !valid {
        return Err(Error::invalid_field(
            "name",
            "must match ^[a-z][a-z0-9_]{0,62}$",
        ));
    }
    Ok(name)
}

pub fn http_path(path: &str) -> Result<&str> {
    if !path.starts_with('/') {
        return Err(Error::invalid_field("http_path", "must start with /"));
    }
    text("http_path", path, COMMAND_MAX_CHARS)
}

/// Checks an env name: `^[A-Za-z_][A-Za-z0-9_]*$`, at most 128
/// characters, and not one that the platform sets.
pub fn env_name(name: &str) -> Result<&str> {
    let bytes = name.as_bytes();
    let valid = (1..=ENV_NAME_MAX_CHARS).contains(&bytes.len())
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'_');
    if !valid {
        return Err(Error::invalid_field(
            "name",
            "must match ^[A-Za-z_][A-Za-z0-9_]*$ with at most 128 characters",
        ));
    }
    if name.starts_with("AGYN_") || name.starts_with("AGENT_") || RESERVED_ENV_NAMES.contains(&name)
    {
        return Err(Error::invalid_field(
            "name",
            &format!("{name} is reserved for the platform; choose another name"),
        ));
    }
    Ok(name)
}

/// Checks a volume name: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
pub fn volume_name(name: &str) -> Result<&str> {
    let bytes = name.as_bytes();
    let edge = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    let valid = (1..=63).contains(&bytes.len())
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && bytes.iter().all(|byte| edge(*byte) || *byte == b'-');
    if !valid {
        return Err(Error::invalid_field(
            "name",
            "must match ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        ));
    }
    Ok(name)
}

/// Checks a mount path: absolute, normalized (no empty, `.` or `..`
/// segments, no trailing `/`), not `/` and not on or under `/agyn-bin`.
pub fn mount_path(path: &str) -> Result<&str> {
    let invalid = |problem: &str| Err(Error::invalid_field("mount_path", problem));
    if !path.starts_with('/') {
        return invalid("must be an absolute path");
    }
    if path == "/" {
        return invalid("must not be /");
    }
    if path.ends_with('/') {
        return invalid("must not end with /");
    }
    if path[1..]
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return invalid("must be normalized, without empty, . or .. segments");
    }
    if path == AGYN_BIN_DIR || path.starts_with(&format!("{AGYN_BIN_DIR}/")) {
        return invalid("must not be /agyn-bin or a path under it");
    }
    text("mount_path", path, COMMAND_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("512Mi"), Some(536_870_912.0));
        assert_eq!(parse_quantity("4Gi"), Some(4_294_967_296.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
    }

    #[test]
    fn malformed_quantities_fail() {
        for value in ["", "m", "1.", ".5", "-1", "1 Gi", "1gi", "abc", "1.5.2"] {
            assert_eq!(parse_quantity(value), None, "{value:?}");
        }
    }

    #[test]
    fn request_above_limit_fails() {
        let resources = Resources {
            requests_cpu: "2".into(),
            limits_cpu: "500m".into(),
            ..Default::default()
        };
        let error = super::resources("resources", &resources).unwrap_err();
        assert_eq!(
            error.message(),
            "resources.requests_cpu: 2 is above the limit 500m"
        );
    }

    #[test]
    fn oversized_quantities_fail() {
        let cpu = Resources {
            requests_cpu: "3000000".into(),
            ..Resources::default()
        };
        assert!(super::resources("resources", &cpu).is_err());
        let memory = Resources {
            limits_memory: "99999999Ei".into(),
            ..Resources::default()
        };
        assert!(super::resources("resources", &memory).is_err());
        let fine = Resources {
            requests_cpu: "64".into(),
            limits_memory: "512Gi".into(),
            ..Resources::default()
        };
        assert!(super::resources("resources", &fine).is_ok());
    }

    #[test]
    fn mount_paths() {
        for good in ["/data", "/var/lib/x", "/agyn-binary"] {
            assert!(mount_path(good).is_ok(), "{good}");
        }
        for bad in [
            "data",
            "/",
            "/data/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/agyn-bin",
            "/agyn-bin/x",
        ] {
            assert!(mount_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_env_names() {
        for name in [
            "AGYN_X",
            "AGENT_ID",
            "THREAD_ID",
            "WORKLOAD_ID",
            "ORGANIZATION_ID",
            "MCP_PORT",
            "HOOK_PORT",
        ] {
            let error = env_name(name).unwrap_err();
            assert!(error.message().contains("reserved"), "{name}: {error}");
        }
        assert!(env_name("API_KEY").is_ok());
        assert!(env_name("_x1").is_ok());
        assert!(env_name("1X").is_err());
        assert!(env_name(&"A".repeat(129)).is_err());
    }

    #[test]
    fn names() {
        assert!(mcp_name("github_tools").is_ok());
        assert!(mcp_name("Github").is_err());
        assert!(mcp_name("1x").is_err());
        assert!(volume_name("cache-1").is_ok());
        assert!(volume_name("-cache").is_err());
        assert!(volume_name("cache-").is_err());
        assert!(nickname("bot_1-a").is_ok());
        assert!(nickname("Bot").is_err());
        assert!(nickname(&"a".repeat(33)).is_err());
        assert!(capabilities(&["gpu".into(), "arm64_x".into()]).is_ok());
        assert!(capabilities(&["-gpu".into()]).is_err());
        assert!(capabilities(&vec!["a".to_string(); 17]).is_err());
        assert!(capabilities(&["gpu".into(), "gpu".into()]).is_err());
    }

    #[test]
    fn configuration_must_be_object() {
        assert_eq!(configuration("").unwrap(), "{}");
        assert!(configuration("{\"a\":1}").is_ok());
        assert!(configuration("[1]").is_err());
        assert!(configuration("{").is_err());
    }

    #[test]
    fn configuration_checks_agent_keys() {
        assert!(configuration(r#"{"max_tool_iterations": 10, "other": [1]}"#).is_ok());
        let error = configuration(r#"{"max_tool_iterations": 0}"#).unwrap_err();
        assert!(
            error
                .message()
                .contains("max_tool_iterations must be an integer from 1 to 200"),
            "{}",
            error.message()
        );
        let error = configuration(r#"{"temperature": "warm"}"#).unwrap_err();
        assert!(
            error.message().contains("temperature must be a number"),
            "{}",
            error.message()
        );
    }
}
