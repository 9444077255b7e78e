//! SQL for the `tuples` table.
//!
//! The table names the user side `subject_*`; `subject_relation` is always
//! empty because the model has no usersets.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::Db;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::{ObjectRef, Tuple};

/// Filter of `Read`: the object type is required, the other fields
/// narrow the result.
#[derive(Debug, Clone, Default)]
pub struct TupleFilter {
    pub object_type: String,
    pub object_id: Option<String>,
    pub relation: Option<String>,
    pub user: Option<ObjectRef>,
}

pub async fn has_tuple(
    db: &Db,
    user: &ObjectRef,
    relation: &str,
    object: &ObjectRef,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS found FROM tuples WHERE object_type = $1 AND object_id = $2 \
         AND relation = $3 AND subject_type = $4 AND subject_id = $5 AND subject_relation = ''",
    )
    .bind(&object.object_type)
    .bind(&object.id)
    .bind(relation)
    .bind(&user.object_type)
    .bind(&user.id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.is_some())
}

/// Returns the users of `object`'s `relation` tuples, for `from` edges.
pub async fn users_of(db: &Db, object: &ObjectRef, relation: &str) -> Result<Vec<ObjectRef>> {
    let rows = sqlx::query(
        "SELECT subject_type, subject_id FROM tuples WHERE object_type = $1 \
         AND object_id = $2 AND relation = $3 ORDER BY subject_type, subject_id",
    )
    .bind(&object.object_type)
    .bind(&object.id)
    .bind(relation)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ObjectRef {
                object_type: row.try_get("subject_type")?,
                id: row.try_get("subject_id")?,
            })
        })
        .collect()
}

pub async fn write(
    connection: &mut AnyConnection,
    writes: &[Tuple],
    deletes: &[Tuple],
    now: i64,
) -> Result<()> {
    for tuple in deletes {
        sqlx::query(
            "DELETE FROM tuples WHERE object_type = $1 AND object_id = $2 AND relation = $3 \
             AND subject_type = $4 AND subject_id = $5 AND subject_relation = ''",
        )
        .bind(&tuple.object.object_type)
        .bind(&tuple.object.id)
        .bind(&tuple.relation)
        .bind(&tuple.user.object_type)
        .bind(&tuple.user.id)
        .execute(&mut *connection)
        .await?;
    }
    for tuple in writes {
        sqlx::query(
            "INSERT INTO tuples (object_type, object_id, relation, subject_type, subject_id, \
             subject_relation, created_at) VALUES ($1, $2, $3, $4, $5, '', $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&tuple.object.object_type)
        .bind(&tuple.object.id)
        .bind(&tuple.relation)
        .bind(&tuple.user.object_type)
        .bind(&tuple.user.id)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Separator of the key parts inside a page cursor; it cannot occur in
/// object types, relations or ids.
const KEY_SEPARATOR: char = '\u{1f}';

fn tuple_from_row(row: &AnyRow) -> Result<Tuple, sqlx::Error> {
    Ok(Tuple {
        object: ObjectRef {
            object_type: row.try_get("object_type")?,
            id: row.try_get("object_id")?,
        },
        relation: row.try_get("relation")?,
        user: ObjectRef {
            object_type: row.try_get("subject_type")?,
            id: row.try_get("subject_id")?,
        },
    })
}

pub async fn read(db: &Db, filter: &TupleFilter, page: &Page) -> Result<(Vec<Tuple>, String)> {
    let mut sql = String::from(
        "SELECT object_type, object_id, relation, subject_type, subject_id FROM tuples \
         WHERE object_type = $1",
    );
    let mut binds: Vec<String> = vec![filter.object_type.clone()];
    let mut push = |sql: &mut String, clause: &str, value: String| {
        binds.push(value);
        sql.push_str(&format!(" AND {clause} ${}", binds.len()));
    };
    if let Some(id) = &filter.object_id {
        push(&mut sql, "object_id =", id.clone());
    }
    if let Some(relation) = &filter.relation {
        push(&mut sql, "relation =", relation.clone());
    }
    if let Some(user) = &filter.user {
        push(&mut sql, "subject_type =", user.object_type.clone());
        push(&mut sql, "subject_id =", user.id.clone());
    }
    if let Some(cursor) = &page.after {
        let parts: Vec<&str> = cursor.id.split(KEY_SEPARATOR).collect();
        if parts.len() != 4 {
            return Err(
                agyn_core::Error::invalid_field("page_token", "invalid page token")
                    .with_reason("PAGE_TOKEN_INVALID"),
            );
        }
        let start = binds.len();
        for part in &parts {
            binds.push((*part).to_string());
        }
        sql.push_str(&format!(
            " AND (object_id, relation, subject_type, subject_id) > (${}, ${}, ${}, ${})",
            start + 1,
            start + 2,
            start + 3,
            start + 4
        ));
    }
    sql.push_str(&format!(
        " ORDER BY object_id, relation, subject_type, subject_id LIMIT {}",
        page.fetch_limit()
    ));
    let mut query = sqlx::query(&sql);
    for value in &binds {
        query = query.bind(value);
    }
    let rows = query.fetch_all(db.pool()).await?;
    let tuples = rows
        .iter()
        .map(tuple_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(tuples, |tuple| Cursor {
        position: 0,
        id: [
            tuple.object.id.as_str(),
            tuple.relation.as_str(),
            tuple.user.object_type.as_str(),
            tuple.user.id.as_str(),
        ]
        .join(&KEY_SEPARATOR.to_string()),
    }))
}

pub async fn list_objects(
    db: &Db,
    object_type: &str,
    relations: &[&str],
    user: &ObjectRef,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for relation in relations {
        let rows = sqlx::query(
            "SELECT object_id FROM tuples WHERE object_type = $1 AND relation = $2 \
             AND subject_type = $3 AND subject_id = $4",
        )
        .bind(object_type)
        .bind(*relation)
        .bind(&user.object_type)
        .bind(&user.id)
        .fetch_all(db.pool())
        .await?;
        for row in rows {
            ids.push(row.try_get::<String, _>("object_id")?);
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Deletes the tuples on `object`, only those of `relations` when given.
pub async fn delete_on_object(
    connection: &mut AnyConnection,
    object: &ObjectRef,
    relations: Option<&[&str]>,
) -> Result<u64> {
    let mut deleted = 0;
    match relations {
        None => {
            deleted += sqlx::query("DELETE FROM tuples WHERE object_type = $1 AND object_id = $2")
                .bind(&object.object_type)
                .bind(&object.id)
                .execute(&mut *connection)
                .await?
                .rows_affected();
        }
        Some(relations) => {
            for relation in relations {
                deleted += sqlx::query(
                    "DELETE FROM tuples WHERE object_type = $1 AND object_id = $2 AND relation = $3",
                )
                .bind(&object.object_type)
                .bind(&object.id)
                .bind(*relation)
                .execute(&mut *connection)
                .await?
                .rows_affected();
            }
        }
    }
    Ok(deleted)
}

/// Deletes `user`'s `relations` tuples on every object of `object_type`
/// that has the tuple `parent parent_relation <object>`.
pub async fn delete_user_relations_under(
    connection: &mut AnyConnection,
    user: &ObjectRef,
    object_type: &str,
    relations: &[&str],
    parent_relation: &str,
    parent: &ObjectRef,
) -> Result<u64> {
    let mut deleted = 0;
    for relation in relations {
        deleted += sqlx::query(
            "DELETE FROM tuples WHERE object_type = $1 AND relation = $2 \
             AND subject_type = $3 AND subject_id = $4 AND object_id IN ( \
             SELECT p.object_id FROM tuples p WHERE p.object_type = $1 AND p.relation = $5 \
             AND p.subject_type = $6 AND p.subject_id = $7)",
        )
        .bind(object_type)
        .bind(*relation)
        .bind(&user.object_type)
        .bind(&user.id)
        .bind(parent_relation)
        .bind(&parent.object_type)
        .bind(&parent.id)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    }
    Ok(deleted)
}
