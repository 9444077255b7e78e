//! Turning a request's credential into a [`Caller`].

use agyn_core::{Caller, CredentialKind, Error, IdentityKind, Secret};
use agyn_oidc::SignIn;
use agyn_users::Users;
use agyn_users::tokens::{ENROLLMENT_TOKEN_PREFIX, SERVICE_TOKEN_PREFIX, looks_like_api_token};
use http::HeaderMap;

/// Authenticates public requests by bearer API token or, when OIDC is
/// configured, by OIDC access token.
#[derive(Clone)]
pub struct Authenticator {
    users: Users,
    oidc: Option<SignIn>,
}

impl Authenticator {
    pub fn new(users: Users) -> Self {
        Self { users, oidc: None }
    }

    /// Accepts OIDC access tokens through `sign_in`; `None` accepts API
    /// tokens only.
    pub fn with_oidc(mut self, sign_in: Option<SignIn>) -> Self {
        self.oidc = sign_in;
        self
    }

    /// Resolves the `Authorization` header to a caller. The token value is
    /// held in a [`Secret`] and never logged.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Error> {
        let token = bearer_token(headers)?;
        let value = *token.expose();
        if value.starts_with(SERVICE_TOKEN_PREFIX) || value.starts_with(ENROLLMENT_TOKEN_PREFIX) {
            return Err(Error::unauthenticated(
                "service tokens are accepted only by enrollment",
            ));
        }
        if !looks_like_api_token(value) {
            let Some(sign_in) = &self.oidc else {
                return Err(Error::unauthenticated("invalid credential"));
            };
            let identity_id = sign_in.authenticate(&token).await?;
            return Ok(Caller::Identity {
                identity_id,
                kind: IdentityKind::User,
                workload_id: None,
                credential: CredentialKind::Oidc,
            });
        }
        let identity = self.users.authenticate_token(&token).await?;
        Ok(Caller::Identity {
            identity_id: identity.identity_id,
            kind: identity.kind,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        })
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<Secret<&str>, Error> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Error::unauthenticated("missing credential"));
    };
    if values.next().is_some() {
        return Err(Error::unauthenticated("more than one authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| Error::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Error::unauthenticated("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::unauthenticated(
            "unsupported authorization scheme: use Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::unauthenticated("malformed authorization header"));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_token_parses() {
        let first = headers("Bearer abc");
        assert_eq!(*bearer_token(&first).unwrap().expose(), "abc");
        let second = headers("bearer  abc ");
        assert_eq!(*bearer_token(&second).unwrap().expose(), "abc");
    }

    #[test]
    fn bearer_token_rejects_other_schemes() {
        let error = bearer_token(&headers("Basic YWxhZGRpbjpvcGVu")).unwrap_err();
        assert_eq!(
            error.message(),
            "unsupported authorization scheme: use Bearer"
        );
        let error = bearer_token(&headers("Bearer")).unwrap_err();
        assert_eq!(error.message(), "malformed authorization header");
        let error = bearer_token(&HeaderMap::new()).unwrap_err();
        assert_eq!(error.message(), "missing credential");
    }
}
