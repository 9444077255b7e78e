//! A SQL statement assembled from fragments, numbering its `$N`
//! placeholders as arguments are added.

use crate::Backend;
use sqlx::{Any, AnyConnection, any::AnyArguments, query::Query};

enum Argument {
    Text(String),
    Integer(i64),
}

/// SQL text and the arguments of its placeholders, in order.
pub struct Statement {
    sql: String,
    arguments: Vec<Argument>,
    /// Placeholders are `?`, bound in order, instead of `$N`.
    anonymous: bool,
}

impl Statement {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            arguments: Vec::new(),
            anonymous: false,
        }
    }

    /// Starts a statement for `backend` whose every placeholder appears
    /// once, in the order its argument was added. On SQLite they are `?`,
    /// because binding a named parameter such as `$N` looks its name up in
    /// a list of all the statement's names, which makes a statement with
    /// thousands of parameters slow to bind.
    pub fn for_each_once(sql: &str, backend: Backend) -> Self {
        Self {
            anonymous: backend == Backend::Sqlite,
            ..Self::new(sql)
        }
    }

    pub fn push(&mut self, fragment: &str) {
        self.sql.push_str(fragment);
    }

    /// Adds a text argument and returns its placeholder.
    pub fn text(&mut self, value: &str) -> String {
        self.arguments.push(Argument::Text(value.to_string()));
        self.placeholder()
    }

    /// Adds an integer argument and returns its placeholder.
    pub fn integer(&mut self, value: i64) -> String {
        self.arguments.push(Argument::Integer(value));
        self.placeholder()
    }

    fn placeholder(&self) -> String {
        if self.anonymous {
            "?".to_string()
        } else {
            format!("${}", self.arguments.len())
        }
    }

    /// Adds one text argument per value and returns their placeholders
    /// separated by commas, for `IN (...)`.
    pub fn texts(&mut self, values: &[String]) -> String {
        values
            .iter()
            .map(|value| self.text(value))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.sql);
        for argument in &self.arguments {
            query = match argument {
                Argument::Text(value) => query.bind(value.clone()),
                Argument::Integer(value) => query.bind(*value),
            };
        }
        query
    }
}

/// Runs one statement for every `max_items` of `items`: `prefix`, such as
/// `INSERT INTO t (a, b) VALUES `, followed by the text that `rest`
/// returns for the chunk after adding its arguments. Every placeholder
/// appears once, as [`Statement::for_each_once`] requires.
pub async fn execute_in_chunks<T>(
    connection: &mut AnyConnection,
    backend: Backend,
    prefix: &str,
    items: &[T],
    max_items: usize,
    mut rest: impl FnMut(&mut Statement, &[T]) -> String,
) -> Result<(), sqlx::Error> {
    for chunk in items.chunks(max_items) {
        let mut statement = Statement::for_each_once(prefix, backend);
        let text = rest(&mut statement, chunk);
        statement.push(&text);
        statement.query().execute(&mut *connection).await?;
    }
    Ok(())
}
