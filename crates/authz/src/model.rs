//! The authorization model, fixed in code.
//!
//! Each object type declares relations. A relation is the union of direct
//! tuples (whose user must be of an allowed type), other relations of the
//! same object, and `permission from via`: `permission` evaluated on every
//! object that the object's `via` tuples point at. There is no
//! intersection, exclusion or wildcard.

/// One relation of an object type.
#[derive(Debug)]
pub struct Relation {
    pub name: &'static str,
    /// User types a direct tuple of this relation may name; empty for a
    /// purely computed permission.
    pub direct: &'static [&'static str],
    /// Relations of the same object whose holders also hold this one.
    pub computed: &'static [&'static str],
    /// `(permission, via)`: holders of `permission` on any object that
    /// this object's `via` tuples name.
    pub from: &'static [(&'static str, &'static str)],
}

/// One object type and its relations.
#[derive(Debug)]
pub struct ObjectType {
    pub name: &'static str,
    pub relations: &'static [Relation],
}

const fn direct(name: &'static str, users: &'static [&'static str]) -> Relation {
    Relation {
        name,
        direct: users,
        computed: &[],
        from: &[],
    }
}

const IDENTITY: &[&str] = &["identity"];

/// Every object type of the platform.
pub const MODEL: &[ObjectType] = &[
    ObjectType {
        name: "identity",
        relations: &[],
    },
    ObjectType {
        name: "cluster",
        relations: &[direct("admin", IDENTITY)],
    },
    ObjectType {
        name: "organization",
        relations: &[
            direct("cluster", &["cluster"]),
            direct("owner", IDENTITY),
            Relation {
                name: "member",
                direct: IDENTITY,
                computed: &["owner"],
                from: &[],
            },
            direct("thread_create", IDENTITY),
            direct("thread_write", IDENTITY),
            direct("participant_add", IDENTITY),
            Relation {
                name: "can_read",
                direct: &[],
                computed: &["member"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_manage",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_invite",
                direct: &[],
                computed: &["owner"],
                from: &[],
            },
            Relation {
                name: "can_add_member",
                direct: &[],
                computed: &[],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_manage_members",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_manage_organization",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_view_threads",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_view_workloads",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_view_volumes",
                direct: &[],
                computed: &["owner"],
                from: &[("admin", "cluster")],
            },
            Relation {
                name: "can_create_thread",
                direct: &[],
                computed: &["member", "thread_create"],
                from: &[],
            },
        ],
    },
    ObjectType {
        name: "agent",
        relations: &[
            direct("org", &["organization"]),
            direct("internal_access", &["organization"]),
            direct("owner", IDENTITY),
            direct("maintainer", IDENTITY),
            direct("participant", IDENTITY),
            direct("self", IDENTITY),
            Relation {
                name: "can_view",
                direct: &[],
                computed: &[],
                from: &[("can_read", "org")],
            },
            Relation {
                name: "can_initiate",
                direct: &[],
                computed: &["owner", "maintainer", "participant"],
                from: &[("member", "internal_access")],
            },
            Relation {
                name: "can_read_config",
                direct: &[],
                computed: &["owner", "maintainer", "self"],
                from: &[("can_manage", "org")],
            },
            Relation {
                name: "can_edit_config",
                direct: &[],
                computed: &["owner", "maintainer"],
                from: &[("can_manage", "org")],
            },
            Relation {
                name: "can_manage_roles",
                direct: &[],
                computed: &["owner"],
                from: &[("can_manage", "org")],
            },
            Relation {
                name: "can_delete",
                direct: &[],
                computed: &["owner"],
                from: &[("can_manage", "org")],
            },
        ],
    },
    ObjectType {
        name: "thread",
        relations: &[
            direct("org", &["organization"]),
            direct("participant", IDENTITY),
            Relation {
                name: "can_read",
                direct: &[],
                computed: &["participant"],
                from: &[("can_view_threads", "org")],
            },
            Relation {
                name: "can_write",
                direct: &[],
                computed: &["participant"],
                from: &[("thread_write", "org")],
            },
            Relation {
                name: "can_add_participant",
                direct: &[],
                computed: &["participant"],
                from: &[("participant_add", "org")],
            },
        ],
    },
    ObjectType {
        name: "model",
        relations: &[
            direct("org", &["organization"]),
            direct("user", IDENTITY),
            Relation {
                name: "can_use",
                direct: &[],
                computed: &["user"],
                from: &[("can_read", "org")],
            },
            Relation {
                name: "can_manage",
                direct: &[],
                computed: &[],
                from: &[("can_manage", "org")],
            },
        ],
    },
];

/// Returns the object type named `name`.
pub fn object_type(name: &str) -> Option<&'static ObjectType> {
    MODEL.iter().find(|object_type| object_type.name == name)
}

/// Returns the relation `relation` of object type `object_type`.
pub fn relation(object_type: &str, relation: &str) -> Option<&'static Relation> {
    self::object_type(object_type)?
        .relations
        .iter()
        .find(|candidate| candidate.name == relation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        for object_type in MODEL {
            for relation in object_type.relations {
                for computed in relation.computed {
                    assert!(
                        self::relation(object_type.name, computed).is_some(),
                        "{}#{} names unknown {computed}",
                        object_type.name,
                        relation.name
                    );
                }
                for (permission, via) in relation.from {
                    let via_relation = self::relation(object_type.name, via)
                        .unwrap_or_else(|| panic!("{}: unknown via {via}", object_type.name));
                    for target in via_relation.direct {
                        assert!(
                            self::relation(target, permission).is_some(),
                            "{}#{}: {target} has no {permission}",
                            object_type.name,
                            relation.name
                        );
                    }
                }
                for user_type in relation.direct {
                    assert!(
                        self::object_type(user_type).is_some(),
                        "unknown type {user_type}"
                    );
                }
            }
        }
    }
}
