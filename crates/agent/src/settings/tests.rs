use std::collections::HashMap;

use super::*;

const AGENT: &str = "01900000-0000-7000-8000-000000000001";
const THREAD: &str = "01900000-0000-7000-8000-000000000002";
const WORKLOAD: &str = "01900000-0000-7000-8000-000000000003";
const ORG: &str = "01900000-0000-7000-8000-000000000004";
const MODEL: &str = "01900000-0000-7000-8000-000000000005";

/// A complete environment whose credential variables name files in a new
/// temporary directory.
struct Environment {
    vars: HashMap<String, String>,
    dir: PathBuf,
}

impl Environment {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("agyn-agent-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut vars = HashMap::new();
        for (name, file) in [
            ("AGYN_TLS_CERT_FILE", "tls.crt"),
            ("AGYN_TLS_KEY_FILE", "tls.key"),
            ("AGYN_CA_FILE", "ca.crt"),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, format!("{file} contents")).unwrap();
            vars.insert(name.to_string(), path.display().to_string());
        }
        for (name, value) in [
            ("AGENT_ID", AGENT),
            ("AGENT_NAME", "Helper"),
            ("AGENT_MODEL", MODEL),
            ("THREAD_ID", THREAD),
            ("WORKLOAD_ID", WORKLOAD),
            ("ORGANIZATION_ID", ORG),
            ("AGYN_GATEWAY_URL", "https://gateway.test:8080/"),
        ] {
            vars.insert(name.to_string(), value.to_string());
        }
        Self { vars, dir }
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    fn remove(&mut self, name: &str) -> &mut Self {
        self.vars.remove(name);
        self
    }

    fn settings(&self) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| self.vars.get(name).cloned())
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn complete_environment_is_read() {
    let mut env = Environment::new();
    env.set(
        "AGENT_MCP_SERVERS",
        "files=http://127.0.0.1:9000/mcp; search=http://127.0.0.1:9001/rpc/;",
    )
    .set(
        "AGENT_HOOKS",
        "turn_end=http://127.0.0.1:9100/run;workload_stop=http://127.0.0.1:9101/run",
    );
    let settings = env.settings().unwrap();
    assert_eq!(settings.agent_id, AGENT);
    assert_eq!(settings.gateway_url, "https://gateway.test:8080");
    assert_eq!(settings.llm_base_url, "https://gateway.test:8080/v1");
    assert_eq!(settings.otlp_endpoint, "https://gateway.test:8080");
    assert_eq!(settings.credentials.cert_pem, "tls.crt contents");
    assert_eq!(settings.credentials.key_pem.expose(), "tls.key contents");
    assert_eq!(settings.config, AgentConfig::default());
    assert_eq!(
        settings.mcp_servers,
        vec![
            McpServerAddress {
                name: "files".into(),
                url: "http://127.0.0.1:9000/mcp".into(),
            },
            McpServerAddress {
                name: "search".into(),
                url: "http://127.0.0.1:9001/rpc/".into(),
            },
        ]
    );
    assert_eq!(settings.hooks.len(), 2);
    assert_eq!(settings.hooks[0].event, HookEvent::TurnEnd);
    assert_eq!(settings.hooks[1].event, HookEvent::WorkloadStop);
}

#[test]
fn debug_output_hides_the_key() {
    let env = Environment::new();
    let settings = env.settings().unwrap();
    let text = format!("{settings:?}");
    assert!(!text.contains("tls.key contents"), "{text}");
}

#[test]
fn missing_variables_are_named() {
    for name in [
        "AGENT_ID",
        "AGENT_MODEL",
        "THREAD_ID",
        "WORKLOAD_ID",
        "ORGANIZATION_ID",
        "AGYN_GATEWAY_URL",
        "AGYN_TLS_CERT_FILE",
        "AGYN_TLS_KEY_FILE",
        "AGYN_CA_FILE",
    ] {
        let mut env = Environment::new();
        env.remove(name);
        let error = env.settings().unwrap_err();
        assert_eq!(error.variable, name);
        assert!(error.problem.contains("missing"), "{error}");
    }
}

#[test]
fn invalid_variables_are_named() {
    let cases = [
        ("WORKLOAD_ID", "not-a-uuid", "must be a UUID"),
        ("AGYN_GATEWAY_URL", "gateway:8080", "http:// or https://"),
        (
            "AGYN_TLS_KEY_FILE",
            "/nonexistent/agyn/tls.key",
            "failed to read",
        ),
        (
            "AGENT_MCP_SERVERS",
            "Files=http://127.0.0.1:1/mcp",
            "must match",
        ),
        (
            "AGENT_MCP_SERVERS",
            "a=http://127.0.0.1:1;a=http://127.0.0.1:2",
            "listed twice",
        ),
        ("AGENT_MCP_SERVERS", "files", "not name=URL"),
        (
            "AGENT_HOOKS",
            "turn_middle=http://127.0.0.1:1/run",
            "unknown hook event",
        ),
        ("AGENT_CONFIG", "[1]", "JSON object"),
    ];
    for (name, value, problem) in cases {
        let mut env = Environment::new();
        env.set(name, value);
        let error = env.settings().unwrap_err();
        assert_eq!(error.variable, name, "{value}");
        assert!(error.problem.contains(problem), "{value}: {error}");
    }
}

#[test]
fn config_keys_are_read() {
    let config = AgentConfig::parse(
        r#"{"system_prompt": "Be brief.", "max_tool_iterations": 3, "history_messages": 0,
            "temperature": 0.2, "reasoning_effort": "low", "reply_on_error": false,
            "unknown": {"ignored": true}}"#,
    )
    .unwrap();
    assert_eq!(
        config,
        AgentConfig {
            system_prompt: "Be brief.".into(),
            max_tool_iterations: 3,
            history_messages: 0,
            temperature: Some(0.2),
            reasoning_effort: Some("low".into()),
            reply_on_error: false,
        }
    );
    let nulls =
        AgentConfig::parse(r#"{"temperature": null, "max_tool_iterations": null}"#).unwrap();
    assert_eq!(nulls, AgentConfig::default());
}

#[test]
fn config_limits_are_enforced() {
    let cases = [
        (
            r#"{"max_tool_iterations": 0}"#,
            "max_tool_iterations must be an integer from 1 to 200",
        ),
        (r#"{"max_tool_iterations": 201}"#, "max_tool_iterations"),
        (r#"{"max_tool_iterations": 2.5}"#, "max_tool_iterations"),
        (
            r#"{"history_messages": 1001}"#,
            "history_messages must be an integer from 0 to 1000",
        ),
        (r#"{"history_messages": -1}"#, "history_messages"),
        (r#"{"temperature": "warm"}"#, "temperature must be a number"),
        (r#"{"reasoning_effort": "max"}"#, "reasoning_effort must be"),
        (
            r#"{"reply_on_error": "yes"}"#,
            "reply_on_error must be true or false",
        ),
        (r#"{"system_prompt": 1}"#, "system_prompt must be a string"),
        ("{", "invalid JSON"),
    ];
    for (text, problem) in cases {
        let error = AgentConfig::parse(text).unwrap_err();
        assert!(error.contains(problem), "{text}: {error}");
    }
}
