//! The agents service's rules through the Rust API, on SQLite and
//! PostgreSQL.

mod support;

use agyn_agents::{
    AgentChanges, AgentRole, AttachmentFilter, Availability, EnvChanges, EnvSource, HookChanges,
    HookEvent, InitScriptChanges, McpChanges, McpTransport, NewAgent, NewEnv, NewHook,
    NewInitScript, NewMcp, NewSkill, NewVolume, SkillChanges, Target, VolumeChanges, agent_object,
};
use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::error::Code;
use agyn_core::{Caller, IdentityKind};
use agyn_orgs::ResourceCleaner;
use agyn_store::{Backend, on_both_backends};
use support::*;

fn new_agent(org: &str, nickname: Option<&str>) -> NewAgent {
    NewAgent {
        organization_id: org.to_string(),
        name: "  Reviewer  ".into(),
        nickname: nickname.map(str::to_string),
        role: "Code reviewer".into(),
        description: "Reviews pull requests".into(),
        availability: Some(Availability::Private),
        configuration: r#"{"system_prompt":"Be brief"}"#.into(),
        image: "ghcr.io/agynio/agent:1".into(),
        capabilities: vec!["gpu".into()],
        ..Default::default()
    }
}

fn env_value(target: Target, name: &str, value: &str) -> NewEnv {
    NewEnv {
        target: Some(target),
        name: name.into(),
        description: String::new(),
        source: Some(EnvSource::Value(value.into())),
        request_id: String::new(),
    }
}

fn mcp(agent_id: &str, name: &str) -> NewMcp {
    NewMcp {
        agent_id: agent_id.into(),
        name: name.into(),
        command: "npx server".into(),
        ..Default::default()
    }
}

fn scratch_volume(org: &str, name: &str, mount_path: &str) -> NewVolume {
    NewVolume {
        organization_id: org.into(),
        name: name.into(),
        mount_path: mount_path.into(),
        ..Default::default()
    }
}

async fn create_writes_identity_and_tuples(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let mut input = new_agent(&org, Some("reviewer"));
    input.availability = Some(Availability::Internal);
    let view = w.agents.create_agent(&owner, &input).await.unwrap();
    let agent = &view.agent;

    assert!(!view.config_redacted);
    assert_eq!(agent.name, "Reviewer");
    assert_eq!(agent.nickname.as_deref(), Some("reviewer"));
    assert_eq!(agent.idle_timeout_ms, 300_000);
    assert_eq!(agent.configuration, r#"{"system_prompt":"Be brief"}"#);
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &agent.id)
            .await
            .unwrap(),
        Some(IdentityKind::Agent)
    );
    let authorizer = Authorizer::new(w.db.clone());
    let object = agent_object(&agent.id);
    let org_object = agyn_orgs::org_object(&org);
    let agent_identity = ObjectRef::identity(&agent.id);
    let owner_identity = ObjectRef::identity(&id(&owner));
    assert!(authorizer.check(&org_object, "org", &object).await.unwrap());
    assert!(
        authorizer
            .check(&owner_identity, "owner", &object)
            .await
            .unwrap()
    );
    assert!(
        authorizer
            .check(&agent_identity, "self", &object)
            .await
            .unwrap()
    );
    assert!(
        authorizer
            .check(&agent_identity, "member", &org_object)
            .await
            .unwrap()
    );
    assert!(
        authorizer
            .check(&org_object, "internal_access", &object)
            .await
            .unwrap()
    );

    let events = w.agent_events(&agent.id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["organization_id"], org.as_str());
    assert_eq!(events[0].payload["deleted"], false);
}

async fn create_validates_fields(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let cases: Vec<(NewAgent, &str)> = vec![
        (
            NewAgent {
                name: "   ".into(),
                ..new_agent(&org, None)
            },
            "name: must not be empty",
        ),
        (
            new_agent(&org, Some("Bad Nick")),
            "nickname: must be 1 to 32 characters of [a-z0-9_-]",
        ),
        (
            NewAgent {
                availability: None,
                ..new_agent(&org, None)
            },
            "availability: must be INTERNAL or PRIVATE",
        ),
        (
            NewAgent {
                configuration: "[1]".into(),
                ..new_agent(&org, None)
            },
            "configuration: must be a JSON object",
        ),
        (
            NewAgent {
                idle_timeout_ms: Some(10_000),
                ..new_agent(&org, None)
            },
            "idle_timeout: must be between 30 s and 24 h",
        ),
        (
            NewAgent {
                capabilities: vec!["GPU".into()],
                ..new_agent(&org, None)
            },
            "capabilities[0]: must match ^[a-z0-9][a-z0-9_-]{0,31}$",
        ),
        (
            NewAgent {
                resources: agyn_agents::Resources {
                    requests_memory: "1Gi".into(),
                    limits_memory: "512Mi".into(),
                    ..Default::default()
                },
                ..new_agent(&org, None)
            },
            "resources.requests_memory: 1Gi is above the limit 512Mi",
        ),
        (
            NewAgent {
                resources: agyn_agents::Resources {
                    limits_cpu: "two".into(),
                    ..Default::default()
                },
                ..new_agent(&org, None)
            },
            "resources.limits_cpu: \"two\" is not a quantity such as 500m, 2, 512Mi or 4Gi",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.agents.create_agent(&owner, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    assert_eq!(w.count("agents", "organization_id", &org).await, 0);
}

async fn nickname_conflict_leaves_nothing(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let first = w
        .agents
        .create_agent(&owner, &new_agent(&org, Some("bot")))
        .await
        .unwrap();
    let tuples_before: (i64,) = agyn_store::sqlx::query_as("SELECT COUNT(*) FROM tuples")
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    w.events.clear();

    assert_error(
        w.agents
            .create_agent(&owner, &new_agent(&org, Some("bot")))
            .await,
        Code::AlreadyExists,
        &format!("nickname \"bot\" is already used in organization {org}; choose another nickname"),
    );
    assert_eq!(w.count("agents", "organization_id", &org).await, 1);
    assert_eq!(w.count("identities", "identity_type", "agent").await, 1);
    let tuples_after: (i64,) = agyn_store::sqlx::query_as("SELECT COUNT(*) FROM tuples")
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    assert_eq!(tuples_after.0, tuples_before.0);
    assert!(w.events.all().is_empty());

    let second = w
        .agents
        .create_agent(&owner, &new_agent(&org, Some("other")))
        .await
        .unwrap();
    let rename = AgentChanges {
        nickname: Some("bot".into()),
        name: Some("Renamed".into()),
        ..Default::default()
    };
    assert_code(
        w.agents
            .update_agent(&owner, &second.agent.id, &rename)
            .await,
        Code::AlreadyExists,
    );
    let unchanged = w.agents.get_agent(&owner, &second.agent.id).await.unwrap();
    assert_eq!(unchanged.agent.nickname.as_deref(), Some("other"));
    assert_eq!(unchanged.agent.name, "Reviewer");

    let cleared = AgentChanges {
        nickname: Some(String::new()),
        ..Default::default()
    };
    let view = w
        .agents
        .update_agent(&owner, &first.agent.id, &cleared)
        .await
        .unwrap();
    assert_eq!(view.agent.nickname, None);
    w.agents
        .update_agent(&owner, &second.agent.id, &rename)
        .await
        .unwrap();
}

async fn metadata_visible_config_redacted(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let private = w
        .agents
        .create_agent(&owner, &new_agent(&org, Some("private")))
        .await
        .unwrap();

    let seen = w
        .agents
        .get_agent(&member, &private.agent.id)
        .await
        .unwrap();
    assert!(seen.config_redacted);
    assert_eq!(seen.agent.name, "Reviewer");
    assert_eq!(seen.agent.nickname.as_deref(), Some("private"));
    assert_eq!(seen.agent.role, "Code reviewer");
    assert_eq!(seen.agent.description, "Reviews pull requests");
    assert_eq!(seen.agent.availability, Availability::Private);
    assert_eq!(seen.agent.configuration, "");
    assert_eq!(seen.agent.image, "");
    assert_eq!(seen.agent.idle_timeout_ms, 0);
    assert!(seen.agent.capabilities.is_empty());

    let (listed, _) = w.agents.list_agents(&member, &org, 0, "").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].config_redacted);
    let (listed, _) = w.agents.list_agents(&owner, &org, 0, "").await.unwrap();
    assert!(!listed[0].config_redacted);

    let itself = agent_caller(&private.agent.id);
    let own = w
        .agents
        .get_agent(&itself, &private.agent.id)
        .await
        .unwrap();
    assert!(!own.config_redacted);
    assert_eq!(own.agent.configuration, r#"{"system_prompt":"Be brief"}"#);

    assert_code(
        w.agents.get_agent(&outsider, &private.agent.id).await,
        Code::PermissionDenied,
    );
    assert_code(
        w.agents.list_agents(&outsider, &org, 0, "").await,
        Code::PermissionDenied,
    );
    assert_error(
        w.agents
            .get_agent(&member, "00000000-0000-4000-8000-000000000000")
            .await,
        Code::NotFound,
        "agent 00000000-0000-4000-8000-000000000000 not found",
    );
}

async fn roles_grant_their_rights(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "Acme").await;
    for user in [&alice, &bob, &carol] {
        w.join(&org, &owner, user).await;
    }
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let authorizer = Authorizer::new(w.db.clone());
    let object = agent_object(&agent_id);

    assert!(
        !authorizer
            .check(&ObjectRef::identity(&id(&alice)), "can_initiate", &object)
            .await
            .unwrap()
    );
    let assignment = w
        .agents
        .set_agent_role(&owner, &agent_id, &id(&alice), Some(AgentRole::Participant))
        .await
        .unwrap();
    assert_eq!(assignment.identity_kind, Some(IdentityKind::User));
    assert!(
        authorizer
            .check(&ObjectRef::identity(&id(&alice)), "can_initiate", &object)
            .await
            .unwrap()
    );
    let view = w.agents.get_agent(&alice, &agent_id).await.unwrap();
    assert!(view.config_redacted);
    assert_code(
        w.agents.list_mcps(&alice, &agent_id, 0, "").await,
        Code::PermissionDenied,
    );

    w.agents
        .set_agent_role(&owner, &agent_id, &id(&bob), Some(AgentRole::Maintainer))
        .await
        .unwrap();
    assert!(
        !w.agents
            .get_agent(&bob, &agent_id)
            .await
            .unwrap()
            .config_redacted
    );
    let renamed = AgentChanges {
        description: Some("Edited by a maintainer".into()),
        ..Default::default()
    };
    w.agents
        .update_agent(&bob, &agent_id, &renamed)
        .await
        .unwrap();
    let availability = AgentChanges {
        availability: Some(Availability::Internal),
        ..Default::default()
    };
    assert_code(
        w.agents.update_agent(&bob, &agent_id, &availability).await,
        Code::PermissionDenied,
    );
    assert_code(
        w.agents
            .set_agent_role(&bob, &agent_id, &id(&carol), Some(AgentRole::Participant))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        w.agents.delete_agent(&bob, &agent_id).await,
        Code::PermissionDenied,
    );

    w.agents
        .set_agent_role(&owner, &agent_id, &id(&carol), Some(AgentRole::Owner))
        .await
        .unwrap();
    w.agents
        .set_agent_role(&carol, &agent_id, &id(&alice), Some(AgentRole::Maintainer))
        .await
        .unwrap();
    let roles = w.agents.list_agent_roles(&carol, &agent_id).await.unwrap();
    let alice_roles: Vec<AgentRole> = roles
        .iter()
        .filter(|assignment| assignment.identity_id == id(&alice))
        .map(|assignment| assignment.role)
        .collect();
    assert_eq!(alice_roles, vec![AgentRole::Maintainer]);
    assert_eq!(roles.len(), 4, "{roles:?}");

    assert_error(
        w.agents
            .set_agent_role(
                &owner,
                &agent_id,
                &id(&outsider),
                Some(AgentRole::Participant),
            )
            .await,
        Code::FailedPrecondition,
        "identity is not a member of the agent's organization",
    );
    assert_error(
        w.agents
            .set_agent_role(&owner, &agent_id, &id(&alice), None)
            .await,
        Code::InvalidArgument,
        "role: must be OWNER, MAINTAINER or PARTICIPANT",
    );

    let mine = w.agents.list_my_agent_roles(&alice, &org).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].agent_id, agent_id);
    assert_eq!(mine[0].role, AgentRole::Maintainer);
    w.agents
        .remove_agent_role(&carol, &agent_id, &id(&alice))
        .await
        .unwrap();
    w.agents
        .remove_agent_role(&carol, &agent_id, &id(&alice))
        .await
        .unwrap();
    assert!(
        w.agents
            .list_my_agent_roles(&alice, &org)
            .await
            .unwrap()
            .is_empty()
    );
    assert_code(
        w.agents.list_agent_roles(&alice, &agent_id).await,
        Code::PermissionDenied,
    );
}

async fn availability_toggles_internal_access(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let authorizer = Authorizer::new(w.db.clone());
    let object = agent_object(&agent.agent.id);
    let member_ref = ObjectRef::identity(&id(&member));
    assert!(
        !authorizer
            .check(&member_ref, "can_initiate", &object)
            .await
            .unwrap()
    );

    let to_internal = AgentChanges {
        availability: Some(Availability::Internal),
        ..Default::default()
    };
    w.agents
        .update_agent(&owner, &agent.agent.id, &to_internal)
        .await
        .unwrap();
    assert!(
        authorizer
            .check(&member_ref, "can_initiate", &object)
            .await
            .unwrap()
    );

    let to_private = AgentChanges {
        availability: Some(Availability::Private),
        ..Default::default()
    };
    w.agents
        .update_agent(&owner, &agent.agent.id, &to_private)
        .await
        .unwrap();
    assert!(
        !authorizer
            .check(&member_ref, "can_initiate", &object)
            .await
            .unwrap()
    );
}

async fn capabilities_omitted_vs_cleared(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w
        .agents
        .create_agent(&owner, &new_agent(&org, None))
        .await
        .unwrap();
    let id = agent.agent.id.clone();

    let other_field = AgentChanges {
        role: Some("Tester".into()),
        ..Default::default()
    };
    let kept = w
        .agents
        .update_agent(&owner, &id, &other_field)
        .await
        .unwrap();
    assert_eq!(kept.agent.capabilities, vec!["gpu".to_string()]);

    let cleared = AgentChanges {
        capabilities: Some(Vec::new()),
        ..Default::default()
    };
    let view = w.agents.update_agent(&owner, &id, &cleared).await.unwrap();
    assert!(view.agent.capabilities.is_empty());
    assert_error(
        w.agents
            .update_agent(&owner, &id, &AgentChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );
}

async fn model_must_exist_in_org(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let model = w.model(&owner, &org).await;
    let foreign_model = w.model(&owner, &other_org).await;

    for missing in [
        foreign_model.as_str(),
        "00000000-0000-4000-8000-000000000000",
    ] {
        let input = NewAgent {
            model: missing.into(),
            ..new_agent(&org, None)
        };
        assert_error(
            w.agents.create_agent(&owner, &input).await,
            Code::InvalidArgument,
            "model: model not found in organization",
        );
    }
    let input = NewAgent {
        model: model.clone(),
        ..new_agent(&org, None)
    };
    let agent = w.agents.create_agent(&owner, &input).await.unwrap();
    assert_eq!(agent.agent.model, model);
    let changes = AgentChanges {
        model: Some(foreign_model.clone()),
        ..Default::default()
    };
    assert_error(
        w.agents
            .update_agent(&owner, &agent.agent.id, &changes)
            .await,
        Code::InvalidArgument,
        "model: model not found in organization",
    );
    let cleared = AgentChanges {
        model: Some(String::new()),
        ..Default::default()
    };
    let view = w
        .agents
        .update_agent(&owner, &agent.agent.id, &cleared)
        .await
        .unwrap();
    assert_eq!(view.agent.model, "");
}

async fn create_replays_request_id(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let input = NewAgent {
        request_id: "create-1".into(),
        ..new_agent(&org, Some("bot"))
    };
    let first = w.agents.create_agent(&owner, &input).await.unwrap();
    let again = w.agents.create_agent(&owner, &input).await.unwrap();
    assert_eq!(again.agent.id, first.agent.id);
    assert_eq!(w.count("agents", "organization_id", &org).await, 1);

    let changed = NewAgent {
        name: "Other".into(),
        ..input
    };
    let error = assert_code(
        w.agents.create_agent(&owner, &changed).await,
        Code::AlreadyExists,
    );
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
}

async fn delete_cascades_everything(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let agent = w.agent(&owner, &org, Availability::Internal).await;
    let agent_id = agent.agent.id.clone();
    w.agents
        .set_agent_role(
            &owner,
            &agent_id,
            &id(&member),
            Some(AgentRole::Participant),
        )
        .await
        .unwrap();
    let server = w
        .agents
        .create_mcp(&owner, &mcp(&agent_id, "tools"))
        .await
        .unwrap();
    let hook = w
        .agents
        .create_hook(
            &owner,
            &NewHook {
                agent_id: agent_id.clone(),
                event: Some(HookEvent::TurnEnd),
                function: "echo done".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.agents
        .create_skill(
            &owner,
            &NewSkill {
                agent_id: agent_id.clone(),
                name: "Reviews".into(),
                body: "Review carefully".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.agents
        .create_env(
            &owner,
            &env_value(Target::Mcp(server.id.clone()), "TOKEN_FILE", "/x"),
        )
        .await
        .unwrap();
    w.agents
        .create_init_script(
            &owner,
            &NewInitScript {
                target: Some(Target::Hook(hook.id.clone())),
                script: "apt-get install -y jq".into(),
                description: String::new(),
                request_id: String::new(),
            },
        )
        .await
        .unwrap();
    let volume = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "cache", "/cache"))
        .await
        .unwrap();
    w.agents
        .create_volume_attachment(
            &owner,
            &volume.id,
            Some(&Target::Agent(agent_id.clone())),
            false,
            "",
        )
        .await
        .unwrap();
    let pull = w.image_pull_secret(&owner, &org).await;
    w.agents
        .create_image_pull_secret_attachment(
            &owner,
            &pull,
            Some(&Target::Mcp(server.id.clone())),
            "",
        )
        .await
        .unwrap();
    w.events.clear();

    w.agents.delete_agent(&owner, &agent_id).await.unwrap();

    for table in [
        "agent_mcps",
        "agent_skills",
        "agent_hooks",
        "agent_envs",
        "agent_init_scripts",
        "volume_attachments",
        "image_pull_secret_attachments",
    ] {
        assert_eq!(w.count(table, "agent_id", &agent_id).await, 0, "{table}");
    }
    assert_eq!(w.count("agents", "id", &agent_id).await, 0);
    assert_eq!(w.count("identities", "id", &agent_id).await, 0);
    assert_eq!(w.tuples_of(&agent_id).await, 0);
    assert_eq!(w.count("volumes", "id", &volume.id).await, 1);
    let events = w.agent_events(&agent_id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["deleted"], true);
    assert_error(
        w.agents.get_agent(&owner, &agent_id).await,
        Code::NotFound,
        &format!("agent {agent_id} not found"),
    );
    w.agents.delete_volume(&owner, &volume.id).await.unwrap();
}

async fn sub_resource_writes_bump_agent(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let mut last = w.updated_at(&agent_id).await;
    let mut events = w.agent_events(&agent_id).len();

    macro_rules! bumps {
        ($what:expr, $call:expr) => {{
            let result = $call.await.unwrap();
            let now = w.updated_at(&agent_id).await;
            assert!(now > last, "{} did not bump updated_at", $what);
            last = now;
            let published = w.agent_events(&agent_id);
            assert_eq!(published.len(), events + 1, "{} published no event", $what);
            assert_eq!(published[events].payload["deleted"], false);
            events += 1;
            result
        }};
    }

    let server = bumps!(
        "CreateMcp",
        w.agents.create_mcp(&owner, &mcp(&agent_id, "tools"))
    );
    let changes = McpChanges {
        command: Some("uvx server".into()),
        ..Default::default()
    };
    bumps!(
        "UpdateMcp",
        w.agents.update_mcp(&owner, &server.id, &changes)
    );
    let skill = bumps!(
        "CreateSkill",
        w.agents.create_skill(
            &owner,
            &NewSkill {
                agent_id: agent_id.clone(),
                name: "Style".into(),
                ..Default::default()
            },
        )
    );
    let changes = SkillChanges {
        body: Some("Use short sentences".into()),
        ..Default::default()
    };
    bumps!(
        "UpdateSkill",
        w.agents.update_skill(&owner, &skill.id, &changes)
    );
    bumps!("DeleteSkill", w.agents.delete_skill(&owner, &skill.id));
    let hook = bumps!(
        "CreateHook",
        w.agents.create_hook(
            &owner,
            &NewHook {
                agent_id: agent_id.clone(),
                event: Some(HookEvent::WorkloadStart),
                function: "echo hi".into(),
                ..Default::default()
            },
        )
    );
    let changes = HookChanges {
        timeout_ms: Some(5_000),
        ..Default::default()
    };
    bumps!(
        "UpdateHook",
        w.agents.update_hook(&owner, &hook.id, &changes)
    );
    let env = bumps!(
        "CreateEnv",
        w.agents.create_env(
            &owner,
            &env_value(Target::Hook(hook.id.clone()), "LEVEL", "1")
        )
    );
    let changes = EnvChanges {
        value: Some("2".into()),
        ..Default::default()
    };
    bumps!("UpdateEnv", w.agents.update_env(&owner, &env.id, &changes));
    bumps!("DeleteEnv", w.agents.delete_env(&owner, &env.id));
    let script = bumps!(
        "CreateInitScript",
        w.agents.create_init_script(
            &owner,
            &NewInitScript {
                target: Some(Target::Mcp(server.id.clone())),
                script: "echo setup".into(),
                description: String::new(),
                request_id: String::new(),
            },
        )
    );
    let changes = InitScriptChanges {
        description: Some("Setup".into()),
        ..Default::default()
    };
    bumps!(
        "UpdateInitScript",
        w.agents.update_init_script(&owner, &script.id, &changes)
    );
    bumps!(
        "DeleteInitScript",
        w.agents.delete_init_script(&owner, &script.id)
    );
    let volume = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "scratch", "/scratch"))
        .await
        .unwrap();
    let attachment = bumps!(
        "CreateVolumeAttachment",
        w.agents.create_volume_attachment(
            &owner,
            &volume.id,
            Some(&Target::Mcp(server.id.clone())),
            false,
            "",
        )
    );
    bumps!(
        "UpdateVolumeAttachment",
        w.agents
            .update_volume_attachment(&owner, &attachment.id, Some(true))
    );
    let changes = VolumeChanges {
        description: Some("Scratch space".into()),
        ..Default::default()
    };
    bumps!(
        "UpdateVolume",
        w.agents.update_volume(&owner, &volume.id, &changes)
    );
    bumps!(
        "DeleteVolumeAttachment",
        w.agents.delete_volume_attachment(&owner, &attachment.id)
    );
    let pull = w.image_pull_secret(&owner, &org).await;
    let pull_attachment = bumps!(
        "CreateImagePullSecretAttachment",
        w.agents.create_image_pull_secret_attachment(
            &owner,
            &pull,
            Some(&Target::Agent(agent_id.clone())),
            "",
        )
    );
    let other_pull = w.image_pull_secret(&owner, &org).await;
    bumps!(
        "UpdateImagePullSecretAttachment",
        w.agents.update_image_pull_secret_attachment(
            &owner,
            &pull_attachment.id,
            Some(other_pull.as_str()),
        )
    );
    bumps!(
        "DeleteImagePullSecretAttachment",
        w.agents
            .delete_image_pull_secret_attachment(&owner, &pull_attachment.id)
    );
    bumps!("DeleteHook", w.agents.delete_hook(&owner, &hook.id));
    bumps!("DeleteMcp", w.agents.delete_mcp(&owner, &server.id));

    assert_eq!(w.agent_events(&agent_id).len(), events);
    assert_eq!(w.updated_at(&agent_id).await, last);
}

async fn mcp_and_hook_delete_their_items(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let server = w
        .agents
        .create_mcp(&owner, &mcp(&agent_id, "tools"))
        .await
        .unwrap();
    let own_env = w
        .agents
        .create_env(
            &owner,
            &env_value(Target::Agent(agent_id.clone()), "MODE", "x"),
        )
        .await
        .unwrap();
    w.agents
        .create_env(
            &owner,
            &env_value(Target::Mcp(server.id.clone()), "MODE", "y"),
        )
        .await
        .unwrap();
    assert_code(
        w.agents.create_mcp(&owner, &mcp(&agent_id, "tools")).await,
        Code::AlreadyExists,
    );
    assert_code(
        w.agents
            .create_env(
                &owner,
                &env_value(Target::Mcp(server.id.clone()), "MODE", "z"),
            )
            .await,
        Code::AlreadyExists,
    );

    w.agents.delete_mcp(&owner, &server.id).await.unwrap();
    assert_eq!(w.count("agent_envs", "target_id", &server.id).await, 0);
    assert_eq!(w.count("agent_envs", "id", &own_env.id).await, 1);
    assert_error(
        w.agents
            .list_envs(&owner, Some(&Target::Mcp(server.id.clone())), 0, "")
            .await,
        Code::NotFound,
        &format!("mcp {} not found", server.id),
    );
}

async fn reserved_env_names_rejected(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    for name in [
        "AGYN_GATEWAY_URL",
        "AGENT_ID",
        "THREAD_ID",
        "WORKLOAD_ID",
        "ORGANIZATION_ID",
        "MCP_PORT",
        "HOOK_PORT",
    ] {
        assert_error(
            w.agents
                .create_env(&owner, &env_value(agent_target(&agent), name, "x"))
                .await,
            Code::InvalidArgument,
            &format!("name: {name} is reserved for the platform; choose another name"),
        );
    }

    assert_code(
        w.agents
            .create_env(&owner, &env_value(agent_target(&agent), "9LIVES", "x"))
            .await,
        Code::InvalidArgument,
    );
    let env = w
        .agents
        .create_env(&owner, &env_value(agent_target(&agent), "AGENTS_HOME", "x"))
        .await
        .unwrap();

    let rename = EnvChanges {
        name: Some("AGYN_HOME".into()),
        ..Default::default()
    };
    assert_code(
        w.agents.update_env(&owner, &env.id, &rename).await,
        Code::InvalidArgument,
    );
    let both = EnvChanges {
        value: Some("a".into()),
        secret_id: Some(agyn_core::id::new_id()),
        ..Default::default()
    };
    assert_error(
        w.agents.update_env(&owner, &env.id, &both).await,
        Code::InvalidArgument,
        "value and secret_id are exclusive; set at most one",
    );

    assert_error(
        w.agents.list_envs(&owner, None, 0, "").await,
        Code::InvalidArgument,
        "exactly one of agent_id, mcp_id or hook_id is required",
    );
}

async fn secret_envs_store_only_ids(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let secret = w.secret(&owner, &org, "api-key", "very-secret-value").await;
    let foreign = w.secret(&owner, &other_org, "api-key", "other-value").await;

    let mut input = env_value(agent_target(&agent), "API_KEY", "");
    input.source = Some(EnvSource::Secret(foreign.clone()));
    assert_error(
        w.agents.create_env(&owner, &input).await,
        Code::InvalidArgument,
        "secret_id: belongs to another organization",
    );
    input.source = Some(EnvSource::Secret(agyn_core::id::new_id()));
    assert_code(
        w.agents.create_env(&owner, &input).await,
        Code::InvalidArgument,
    );
    input.source = Some(EnvSource::Secret(secret.clone()));
    let env = w.agents.create_env(&owner, &input).await.unwrap();
    assert_eq!(env.source, EnvSource::Secret(secret.clone()));

    let fetched = w.agents.get_env(&owner, &env.id).await.unwrap();
    assert_eq!(fetched.source, EnvSource::Secret(secret.clone()));
    let (listed, _) = w
        .agents
        .list_envs(&owner, Some(&agent_target(&agent)), 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains("very-secret-value"));

    let component = Caller::Component("secrets");
    assert_eq!(
        w.agents
            .count_secret_references(&component, &secret)
            .await
            .unwrap(),
        vec![env.id.clone()]
    );
    let error = assert_code(
        w.secrets.delete_secret(&owner, &secret).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error.reason(), Some("REFERENCED"));
    assert!(error.message().contains(&env.id), "{error}");

    let to_value = EnvChanges {
        value: Some("plain".into()),
        ..Default::default()
    };
    let updated = w
        .agents
        .update_env(&owner, &env.id, &to_value)
        .await
        .unwrap();
    assert_eq!(updated.source, EnvSource::Value("plain".into()));
    assert!(
        w.agents
            .count_secret_references(&component, &secret)
            .await
            .unwrap()
            .is_empty()
    );
    w.secrets.delete_secret(&owner, &secret).await.unwrap();
}

async fn image_pull_references_counted(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let pull = w.image_pull_secret(&owner, &org).await;
    let foreign = w.image_pull_secret(&owner, &other_org).await;
    let target = agent_target(&agent);

    assert_error(
        w.agents
            .create_image_pull_secret_attachment(&owner, &foreign, Some(&target), "")
            .await,
        Code::InvalidArgument,
        "image_pull_secret_id: belongs to another organization",
    );
    let attachment = w
        .agents
        .create_image_pull_secret_attachment(&owner, &pull, Some(&target), "")
        .await
        .unwrap();
    assert_code(
        w.agents
            .create_image_pull_secret_attachment(&owner, &pull, Some(&target), "")
            .await,
        Code::AlreadyExists,
    );
    let component = Caller::Component("secrets");
    assert_eq!(
        w.agents
            .count_image_pull_secret_references(&component, &pull)
            .await
            .unwrap(),
        vec![attachment.id.clone()]
    );
    let error = assert_code(
        w.secrets.delete_image_pull_secret(&owner, &pull).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error.reason(), Some("REFERENCED"));
    let by_secret = AttachmentFilter {
        resource_id: Some(pull.clone()),
        ..Default::default()
    };
    let (listed, _) = w
        .agents
        .list_image_pull_secret_attachments(&owner, &by_secret, 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_code(
        w.agents
            .list_image_pull_secret_attachments(&owner, &AttachmentFilter::default(), 0, "")
            .await,
        Code::InvalidArgument,
    );
    w.agents
        .delete_image_pull_secret_attachment(&owner, &attachment.id)
        .await
        .unwrap();
    w.secrets
        .delete_image_pull_secret(&owner, &pull)
        .await
        .unwrap();
}

async fn mount_path_rules_hold(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let target = agent_target(&agent);
    for (path, message) in [
        ("data", "mount_path: must be an absolute path"),
        ("/", "mount_path: must not be /"),
        ("/data/", "mount_path: must not end with /"),
        (
            "/a/../b",
            "mount_path: must be normalized, without empty, . or .. segments",
        ),
        (
            "/agyn-bin/tools",
            "mount_path: must not be /agyn-bin or a path under it",
        ),
    ] {
        assert_error(
            w.agents
                .create_volume(&owner, &scratch_volume(&org, "bad", path))
                .await,
            Code::InvalidArgument,
            message,
        );
    }
    let persistent = NewVolume {
        persistent: true,
        ..scratch_volume(&org, "disk", "/data")
    };
    assert_error(
        w.agents.create_volume(&owner, &persistent).await,
        Code::InvalidArgument,
        "size: is required for a persistent volume",
    );
    let short_ttl = NewVolume {
        size: Some("10Gi".into()),
        ttl_ms: Some(60_000),
        ..persistent.clone()
    };
    assert_error(
        w.agents.create_volume(&owner, &short_ttl).await,
        Code::InvalidArgument,
        "ttl: must be at least 1 h",
    );
    let sized_scratch = NewVolume {
        size: Some("1Gi".into()),
        ..scratch_volume(&org, "tmp", "/tmp/work")
    };
    assert_code(
        w.agents.create_volume(&owner, &sized_scratch).await,
        Code::InvalidArgument,
    );

    let disk = w
        .agents
        .create_volume(
            &owner,
            &NewVolume {
                size: Some("10Gi".into()),
                ttl_ms: Some(7_200_000),
                ..persistent
            },
        )
        .await
        .unwrap();
    assert_code(
        w.agents
            .create_volume(&owner, &scratch_volume(&org, "disk", "/other"))
            .await,
        Code::AlreadyExists,
    );
    let cache = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "cache", "/data"))
        .await
        .unwrap();
    let logs = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "logs", "/logs"))
        .await
        .unwrap();
    let attachment = w
        .agents
        .create_volume_attachment(&owner, &disk.id, Some(&target), false, "")
        .await
        .unwrap();
    assert_error(
        w.agents
            .create_volume_attachment(&owner, &disk.id, Some(&target), true, "")
            .await,
        Code::AlreadyExists,
        &format!(
            "volume {} is already attached to agent {}",
            disk.id, agent.agent.id
        ),
    );
    assert_error(
        w.agents
            .create_volume_attachment(&owner, &cache.id, Some(&target), false, "")
            .await,
        Code::AlreadyExists,
        &format!("mount_path \"/data\" already used by volume {}", disk.id),
    );
    w.agents
        .create_volume_attachment(&owner, &logs.id, Some(&target), false, "")
        .await
        .unwrap();
    let moved = VolumeChanges {
        mount_path: Some("/logs".into()),
        ..Default::default()
    };
    assert_error(
        w.agents.update_volume(&owner, &disk.id, &moved).await,
        Code::AlreadyExists,
        &format!("mount_path \"/logs\" already used by volume {}", logs.id),
    );
    let error = assert_code(
        w.agents.delete_volume(&owner, &disk.id).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error.reason(), Some("REFERENCED"));
    assert!(error.message().contains(&attachment.id), "{error}");
    let by_volume = AttachmentFilter {
        resource_id: Some(disk.id.clone()),
        agent_id: Some(agent.agent.id.clone()),
        ..Default::default()
    };
    let (listed, _) = w
        .agents
        .list_volume_attachments(&owner, &by_volume, 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, attachment.id);
}

async fn bundle_contains_everything(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let server = w
        .agents
        .create_mcp(&owner, &mcp(&agent_id, "tools"))
        .await
        .unwrap();
    let secret = w.secret(&owner, &org, "token", "bundle-secret-value").await;
    let mut env = env_value(Target::Mcp(server.id.clone()), "TOKEN", "");
    env.source = Some(EnvSource::Secret(secret.clone()));
    w.agents.create_env(&owner, &env).await.unwrap();
    w.agents
        .create_env(&owner, &env_value(agent_target(&agent), "MODE", "fast"))
        .await
        .unwrap();
    let volume = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "cache", "/cache"))
        .await
        .unwrap();
    w.agents
        .create_volume_attachment(
            &owner,
            &volume.id,
            Some(&Target::Mcp(server.id.clone())),
            true,
            "",
        )
        .await
        .unwrap();

    assert_code(
        w.agents.get_agent_bundle(&owner, &agent_id).await,
        Code::PermissionDenied,
    );
    let bundle = w
        .agents
        .get_agent_bundle(&Caller::Component("orchestrator"), &agent_id)
        .await
        .unwrap();
    assert_eq!(bundle.agent.id, agent_id);
    assert_eq!(bundle.mcps.len(), 1);
    assert_eq!(bundle.envs.len(), 2);
    assert!(
        bundle
            .envs
            .iter()
            .any(|env| env.source == EnvSource::Secret(secret.clone()))
    );
    assert!(!format!("{bundle:?}").contains("bundle-secret-value"));
    assert_eq!(bundle.volume_attachments.len(), 1);
    assert_eq!(bundle.volumes.len(), 1);
    assert_eq!(bundle.volumes[0].id, volume.id);

    let (resolved, resolved_org) = w
        .agents
        .resolve_agent_identity(&Caller::Component("gateway"), &agent_id)
        .await
        .unwrap();
    assert_eq!(resolved, agent_id);
    assert_eq!(resolved_org, org);
    assert_code(
        w.agents
            .resolve_agent_identity(&Caller::Component("gateway"), &id(&owner))
            .await,
        Code::NotFound,
    );
}

async fn cleaner_deletes_organization(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let kept_org = w.org(&owner, "Kept").await;
    let first = w.agent(&owner, &org, Availability::Internal).await;
    let second = w.agent(&owner, &org, Availability::Private).await;
    let kept = w.agent(&owner, &kept_org, Availability::Private).await;
    let volume = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "cache", "/cache"))
        .await
        .unwrap();
    w.agents
        .create_volume_attachment(&owner, &volume.id, Some(&agent_target(&first)), false, "")
        .await
        .unwrap();
    w.agents
        .create_mcp(&owner, &mcp(&second.agent.id, "tools"))
        .await
        .unwrap();

    let cleaner = agyn_agents::AgentsCleaner::new(w.db.clone(), w.events.clone());
    assert_eq!(cleaner.step(), "agents");
    cleaner.delete_organization_resources(&org).await.unwrap();
    cleaner.delete_organization_resources(&org).await.unwrap();

    assert_eq!(w.count("agents", "organization_id", &org).await, 0);
    assert_eq!(w.count("volumes", "organization_id", &org).await, 0);
    for agent in [&first, &second] {
        assert_eq!(w.count("identities", "id", &agent.agent.id).await, 0);
        assert_eq!(w.tuples_of(&agent.agent.id).await, 0);
        assert_eq!(
            w.agent_events(&agent.agent.id).last().unwrap().payload["deleted"],
            true
        );
    }
    assert_eq!(w.count("agents", "id", &kept.agent.id).await, 1);

    let again = w.agent(&owner, &org, Availability::Private).await;
    assert_code(
        w.agents.delete_organization_resources(&owner, &org).await,
        Code::PermissionDenied,
    );
    w.agents
        .delete_organization_resources(&Caller::Component("organizations"), &org)
        .await
        .unwrap();
    assert_eq!(w.count("agents", "id", &again.agent.id).await, 0);
}

async fn deleting_org_rejects_writes(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    // Closing the organization removes the owner's organization tuple but
    // not the owner tuple on the agent, so the update reaches the state
    // check while a create fails the permission check first.
    w.orgs.delete_organization(&owner, &org).await.unwrap();
    let changes = AgentChanges {
        role: Some("Late edit".into()),
        ..Default::default()
    };
    let error = assert_error(
        w.agents
            .update_agent(&owner, &agent.agent.id, &changes)
            .await,
        Code::FailedPrecondition,
        &format!("organization {org} is being deleted"),
    );
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    assert_code(
        w.agents.create_agent(&owner, &new_agent(&org, None)).await,
        Code::PermissionDenied,
    );
}

async fn concurrent_writes_keep_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let target = agent_target(&agent);
    let first = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "first", "/data"))
        .await
        .unwrap();
    let second = w
        .agents
        .create_volume(&owner, &scratch_volume(&org, "second", "/data"))
        .await
        .unwrap();

    let (left, right) = tokio::join!(
        w.agents
            .create_volume_attachment(&owner, &first.id, Some(&target), false, ""),
        w.agents
            .create_volume_attachment(&owner, &second.id, Some(&target), false, ""),
    );
    let failures: Vec<_> = [left, right].into_iter().filter_map(Result::err).collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].code(), Code::AlreadyExists, "{}", failures[0]);
    assert_eq!(
        w.count("volume_attachments", "agent_id", &agent.agent.id)
            .await,
        1
    );

    let input = NewAgent {
        request_id: "same-key".into(),
        ..new_agent(&org, Some("twin"))
    };
    let (left, right) = tokio::join!(
        w.agents.create_agent(&owner, &input),
        w.agents.create_agent(&owner, &input),
    );
    for result in [&left, &right] {
        if let Err(error) = result {
            assert!(
                matches!(error.code(), Code::Unavailable | Code::AlreadyExists),
                "{error}"
            );
        }
    }
    assert!(left.is_ok() || right.is_ok());
    assert_eq!(w.count("agents", "nickname", "twin").await, 1);
}

async fn sub_resource_defaults_and_limits(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();

    let server = w
        .agents
        .create_mcp(&owner, &mcp(&agent_id, "tools"))
        .await
        .unwrap();
    assert_eq!(server.transport, McpTransport::Http);
    assert_eq!(server.http_path, "/mcp");
    assert_eq!(server.tool_timeout_ms, 120_000);
    for (input, message) in [
        (
            mcp(&agent_id, "Tools"),
            "name: must match ^[a-z][a-z0-9_]{0,62}$",
        ),
        (
            NewMcp {
                command: String::new(),
                ..mcp(&agent_id, "empty")
            },
            "command: must not be empty",
        ),
        (
            NewMcp {
                http_path: Some("mcp".into()),
                ..mcp(&agent_id, "path")
            },
            "http_path: must start with /",
        ),
        (
            NewMcp {
                tool_timeout_ms: Some(2 * 3_600_000),
                ..mcp(&agent_id, "slow")
            },
            "tool_timeout: must be between 1 s and 1 h",
        ),
    ] {
        assert_error(
            w.agents.create_mcp(&owner, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    assert_error(
        w.agents
            .update_mcp(&owner, &server.id, &McpChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );

    let hook = NewHook {
        agent_id: agent_id.clone(),
        event: Some(HookEvent::TurnStart),
        function: "echo start".into(),
        ..Default::default()
    };
    let created = w.agents.create_hook(&owner, &hook).await.unwrap();
    assert_eq!(created.timeout_ms, 60_000);
    let no_event = NewHook {
        event: None,
        ..hook.clone()
    };
    assert_error(
        w.agents.create_hook(&owner, &no_event).await,
        Code::InvalidArgument,
        "event: must be WORKLOAD_START, TURN_START, TURN_END or WORKLOAD_STOP",
    );
    let too_long = HookChanges {
        timeout_ms: Some(601_000),
        ..Default::default()
    };
    assert_error(
        w.agents.update_hook(&owner, &created.id, &too_long).await,
        Code::InvalidArgument,
        "timeout: must be between 1 s and 600 s",
    );

    let skill = NewSkill {
        agent_id: agent_id.clone(),
        name: "Style".into(),
        body: "x".repeat(256 * 1024 + 1),
        ..Default::default()
    };
    assert_error(
        w.agents.create_skill(&owner, &skill).await,
        Code::InvalidArgument,
        "body: must be at most 262144 bytes",
    );
    let script = NewInitScript {
        target: Some(agent_target(&agent)),
        script: String::new(),
        description: String::new(),
        request_id: String::new(),
    };
    assert_error(
        w.agents.create_init_script(&owner, &script).await,
        Code::InvalidArgument,
        "script: must not be empty",
    );
    let env = env_value(agent_target(&agent), "BIG", &"v".repeat(32 * 1024 + 1));
    assert_error(
        w.agents.create_env(&owner, &env).await,
        Code::InvalidArgument,
        "value: must be at most 32768 bytes",
    );
}

async fn lists_page_in_creation_order(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let mut created = Vec::new();
    for index in 0..3 {
        let script = NewInitScript {
            target: Some(agent_target(&agent)),
            script: format!("echo {index}"),
            description: String::new(),
            request_id: String::new(),
        };
        created.push(
            w.agents
                .create_init_script(&owner, &script)
                .await
                .unwrap()
                .id,
        );
    }

    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = w
            .agents
            .list_init_scripts(&owner, Some(&agent_target(&agent)), 2, &token)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        listed.extend(page.into_iter().map(|script| script.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(listed, created);

    let other = w.agent(&owner, &org, Availability::Private).await;
    let (first, token) = w.agents.list_agents(&owner, &org, 1, "").await.unwrap();
    assert_eq!(first[0].agent.id, agent.agent.id);
    assert!(!token.is_empty());
    let (second, last) = w.agents.list_agents(&owner, &org, 1, &token).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].agent.id, other.agent.id);
    assert!(last.is_empty());
    let error = assert_code(
        w.agents
            .list_init_scripts(&owner, Some(&agent_target(&agent)), 2, &token)
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
}

on_both_backends!(
    sub_resource_defaults_and_limits,
    lists_page_in_creation_order,
    concurrent_writes_keep_rules,
    create_writes_identity_and_tuples,
    create_validates_fields,
    nickname_conflict_leaves_nothing,
    metadata_visible_config_redacted,
    roles_grant_their_rights,
    availability_toggles_internal_access,
    capabilities_omitted_vs_cleared,
    model_must_exist_in_org,
    create_replays_request_id,
    delete_cascades_everything,
    sub_resource_writes_bump_agent,
    mcp_and_hook_delete_their_items,
    reserved_env_names_rejected,
    secret_envs_store_only_ids,
    image_pull_references_counted,
    mount_path_rules_hold,
    bundle_contains_everything,
    cleaner_deletes_organization,
    deleting_org_rejects_writes,
);
