//! Runner service tokens, in the platform format of
//! [`agyn_users::tokens`]: only the lowercase hex SHA-256 of the whole
//! token is stored.

pub(crate) use agyn_users::tokens::{
    generate_service_token as generate, hash as token_hash, hashes_equal, looks_like_service_token,
};
