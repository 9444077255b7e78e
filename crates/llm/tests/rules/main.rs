//! The LLM service rules, on SQLite and PostgreSQL, against real
//! organizations, tuples and upstream HTTP servers on loopback.

mod common;
mod models;
mod providers;
mod secrecy;
mod test_model;
