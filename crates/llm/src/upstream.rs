//! Upstream URLs of the LLM operations.

/// An LLM operation, which selects the path appended to a provider's
/// endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// OpenAI Responses API, `/responses`.
    Responses,
    /// OpenAI Chat Completions API, `/chat/completions`.
    ChatCompletions,
    /// Anthropic Messages API, `/messages`.
    Messages,
    /// Anthropic token counting, `/messages/count_tokens`.
    CountTokens,
}

impl Operation {
    /// Returns the path of the operation below the API version.
    pub fn path(self) -> &'static str {
        match self {
            Self::Responses => "/responses",
            Self::ChatCompletions => "/chat/completions",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
        }
    }
}

/// Builds the upstream URL of `operation` from a provider endpoint, which
/// is either a base URL or a full operation URL:
///
/// 1. Trailing `/` characters of the endpoint's path are dropped.
/// 2. A path that already ends with the operation path is used as is.
/// 3. Otherwise, a path that ends with `/v1` gets the operation path.
/// 4. Any other path gets `/v1` and the operation path.
/// 5. The caller's `query` (with or without its leading `?`) is appended
///    unchanged, after the endpoint's own query if it has one.
///
/// For [`Operation::CountTokens`], an endpoint that is the full Messages URL
/// (`…/messages`) gets `/count_tokens` appended, so that one Anthropic
/// endpoint serves both operations.
pub fn upstream_url(endpoint: &str, operation: Operation, query: Option<&str>) -> String {
    let endpoint = endpoint.split_once('#').map_or(endpoint, |(url, _)| url);
    let (base, endpoint_query) = match endpoint.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (endpoint, None),
    };
    let base = base.trim_end_matches('/');
    let path = url_path(base);
    let suffix = operation.path();
    let mut url = if path.ends_with(suffix) {
        base.to_string()
    } else if operation == Operation::CountTokens && path.ends_with(Operation::Messages.path()) {
        format!("{base}/count_tokens")
    } else if path.ends_with("/v1") {
        format!("{base}{suffix}")
    } else {
        format!("{base}/v1{suffix}")
    };

    let queries: Vec<&str> = [
        endpoint_query,
        query.map(|query| query.trim_start_matches('?')),
    ]
    .into_iter()
    .flatten()
    .filter(|query| !query.is_empty())
    .collect();
    if !queries.is_empty() {
        url.push('?');
        url.push_str(&queries.join("&"));
    }
    url
}

/// Returns the path of an absolute URL without query: everything from the
/// first `/` after the authority, or `""` when there is none.
fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |index| index + 3);
    url[after_scheme..]
        .find('/')
        .map_or("", |index| &url[after_scheme + index..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_version_and_operation() {
        assert_eq!(
            upstream_url("https://api.openai.com", Operation::Responses, None),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            upstream_url(
                "https://gw.example.com/openai/",
                Operation::ChatCompletions,
                None
            ),
            "https://gw.example.com/openai/v1/chat/completions"
        );
    }

    #[test]
    fn versioned_url_gets_operation() {
        assert_eq!(
            upstream_url("https://api.anthropic.com/v1/", Operation::Messages, None),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            upstream_url("https://api.anthropic.com/v1", Operation::CountTokens, None),
            "https://api.anthropic.com/v1/messages/count_tokens"
        );
    }

    #[test]
    fn operation_url_is_used_as_is() {
        for (endpoint, operation) in [
            ("https://x.example/v1/responses", Operation::Responses),
            (
                "https://x.example/api/chat/completions/",
                Operation::ChatCompletions,
            ),
            ("https://x.example/anthropic/messages", Operation::Messages),
            (
                "https://x.example/v1/messages/count_tokens",
                Operation::CountTokens,
            ),
        ] {
            let expected = endpoint.trim_end_matches('/');
            assert_eq!(upstream_url(endpoint, operation, None), expected);
        }
    }

    #[test]
    fn messages_url_serves_count_tokens() {
        assert_eq!(
            upstream_url(
                "https://x.example/v1/messages",
                Operation::CountTokens,
                None
            ),
            "https://x.example/v1/messages/count_tokens"
        );
    }

    #[test]
    fn host_name_is_not_a_path() {
        assert_eq!(
            upstream_url("http://responses", Operation::Responses, None),
            "http://responses/v1/responses"
        );
        assert_eq!(
            upstream_url("http://v1", Operation::Messages, None),
            "http://v1/v1/messages"
        );
    }

    #[test]
    fn caller_query_is_appended() {
        assert_eq!(
            upstream_url("https://x.example", Operation::Messages, Some("beta=true")),
            "https://x.example/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("https://x.example/v1", Operation::Responses, Some("?a=1&b")),
            "https://x.example/v1/responses?a=1&b"
        );
        assert_eq!(
            upstream_url("https://x.example/v1", Operation::Responses, Some("")),
            "https://x.example/v1/responses"
        );
    }

    #[test]
    fn endpoint_query_is_kept_before_caller_query() {
        assert_eq!(
            upstream_url(
                "https://x.example/openai/v1/?api-version=2",
                Operation::ChatCompletions,
                Some("beta=true")
            ),
            "https://x.example/openai/v1/chat/completions?api-version=2&beta=true"
        );
        assert_eq!(
            upstream_url(
                "https://x.example/v1/responses?api-version=2",
                Operation::Responses,
                None
            ),
            "https://x.example/v1/responses?api-version=2"
        );
    }
}
