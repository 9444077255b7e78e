//! Recursive evaluation of a relation on an object.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use agyn_core::Result;
use agyn_store::Db;

use crate::{ObjectRef, model, store};

/// Deepest chain of computed and `from` steps one check may follow. The
/// model needs at most four; reaching the limit means a model bug.
const MAX_DEPTH: usize = 8;

pub async fn check(db: &Db, user: &ObjectRef, relation: &str, object: &ObjectRef) -> Result<bool> {
    let mut visited = HashSet::new();
    evaluate(db, user, relation, object, 0, &mut visited).await
}

type Evaluation<'a> = Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

fn evaluate<'a>(
    db: &'a Db,
    user: &'a ObjectRef,
    relation: &'a str,
    object: &'a ObjectRef,
    depth: usize,
    visited: &'a mut HashSet<(String, ObjectRef)>,
) -> Evaluation<'a> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            tracing::error!(%user, relation, %object, "Authorization check exceeded the depth limit");
            return Ok(false);
        }
        if !visited.insert((relation.to_string(), object.clone())) {
            return Ok(false);
        }
        let Some(definition) = model::relation(&object.object_type, relation) else {
            return Ok(false);
        };
        if definition.direct.contains(&user.object_type.as_str())
            && store::has_tuple(db, user, relation, object).await?
        {
            return Ok(true);
        }
        for computed in definition.computed {
            if evaluate(db, user, computed, object, depth + 1, visited).await? {
                return Ok(true);
            }
        }
        for (permission, via) in definition.from {
            for related in store::users_of(db, object, via).await? {
                if evaluate(db, user, permission, &related, depth + 1, visited).await? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })
}

/// Relations of the same object that imply `relation`: itself and every
/// relation its computed clauses reach.
pub fn same_object_relations(object_type: &str, relation: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    let mut pending = vec![relation.to_string()];
    while let Some(name) = pending.pop() {
        let Some(definition) = model::relation(object_type, &name) else {
            continue;
        };
        if found.contains(&definition.name) {
            continue;
        }
        found.push(definition.name);
        pending.extend(
            definition
                .computed
                .iter()
                .map(|computed| computed.to_string()),
        );
    }
    found
}
