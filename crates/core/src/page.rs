//! Keyset pagination shared by every list method.
//!
//! A page token is base64url (no padding) of a versioned binary record:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version (1) |
//! | 1 | sort order: 0 ascending, 1 descending |
//! | 8 | fingerprint of the list, its filters, the sort and the caller |
//! | 8 | last returned position (big-endian i64, usually `created_at` in µs) |
//! | 1 + n | length and UTF-8 bytes of the last returned id |
//!
//! The next page starts strictly after `(position, id)`, so rows that share
//! a timestamp are neither skipped nor repeated, and rows inserted during a
//! walk never shift pages already returned. A token presented with other
//! filters, sort or caller is rejected with reason `PAGE_TOKEN_INVALID`.
//!
//! NOTE: tokens are not signed, so a client can edit the cursor inside a
//! token for its own list. That only moves the window over rows the same
//! query would return anyway; signing needs the cluster's master key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Error;

/// Page size used when a request sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; bigger requests are clamped, never rejected.
pub const MAX_PAGE_SIZE: usize = 200;

const TOKEN_VERSION: u8 = 1;
const MAX_ID_LEN: usize = 255;

/// Direction of a keyset walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Ascending,
    Descending,
}

impl SortOrder {
    fn as_byte(self) -> u8 {
        match self {
            Self::Ascending => 0,
            Self::Descending => 1,
        }
    }
}

/// The key of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub position: i64,
    pub id: String,
}

/// Hash of everything a token is bound to: the list, the caller, the sort
/// and every filter value. Feed the parts in a fixed order.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// Starts a fingerprint for the list named `list` (the full method name).
    pub fn new(list: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(list.as_bytes());
        Self(hasher)
    }

    /// Adds one filter value or the caller id. Parts are length-prefixed,
    /// so `("ab", "c")` and `("a", "bc")` differ.
    pub fn with(mut self, part: &str) -> Self {
        self.0.update((part.len() as u64).to_be_bytes());
        self.0.update(part.as_bytes());
        self
    }

    fn finish(self, order: SortOrder) -> u64 {
        let mut hasher = self.0;
        hasher.update([order.as_byte()]);
        let digest = hasher.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("digest has 32 bytes"))
    }
}

/// A validated page request: how many rows to return and where to start.
#[derive(Debug, Clone)]
pub struct Page {
    /// Rows to return; query `limit + 1` to learn whether more follow.
    pub limit: usize,
    /// Start strictly after this key; `None` for the first page.
    pub after: Option<Cursor>,
    pub order: SortOrder,
    fingerprint: u64,
}

impl Page {
    /// Validates `page_size` and decodes `page_token` against the list's
    /// fingerprint.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        order: SortOrder,
        fingerprint: Fingerprint,
    ) -> Result<Self, Error> {
        let limit = match page_size {
            size if size < 0 => {
                return Err(Error::invalid_field("page_size", "must not be negative"));
            }
            0 => DEFAULT_PAGE_SIZE,
            size => (size as usize).min(MAX_PAGE_SIZE),
        };
        let fingerprint = fingerprint.finish(order);
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token, order, fingerprint)?)
        };
        Ok(Self {
            limit,
            after,
            order,
            fingerprint,
        })
    }

    /// Returns the `LIMIT` for the query: one more row than the page size.
    pub fn fetch_limit(&self) -> i64 {
        self.limit as i64 + 1
    }

    /// Cuts `rows` (fetched with [`Page::fetch_limit`]) to the page and
    /// returns them with the next page token, empty on the last page.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
        if rows.len() <= self.limit {
            return (rows, String::new());
        }
        rows.truncate(self.limit);
        let token = rows
            .last()
            .map(|row| encode_token(&key(row), self.order, self.fingerprint))
            .unwrap_or_default();
        (rows, token)
    }
}

fn encode_token(cursor: &Cursor, order: SortOrder, fingerprint: u64) -> String {
    let id = cursor.id.as_bytes();
    let id = &id[..id.len().min(MAX_ID_LEN)];
    let mut record = Vec::with_capacity(19 + id.len());
    record.push(TOKEN_VERSION);
    record.push(order.as_byte());
    record.extend_from_slice(&fingerprint.to_be_bytes());
    record.extend_from_slice(&cursor.position.to_be_bytes());
    record.push(id.len() as u8);
    record.extend_from_slice(id);
    URL_SAFE_NO_PAD.encode(record)
}

fn decode_token(token: &str, order: SortOrder, fingerprint: u64) -> Result<Cursor, Error> {
    let invalid = || {
        Error::invalid_field("page_token", "invalid page token").with_reason("PAGE_TOKEN_INVALID")
    };
    let record = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if record.len() < 19 || record[0] != TOKEN_VERSION {
        return Err(invalid());
    }
    if record[1] != order.as_byte() {
        return Err(invalid());
    }
    let token_fingerprint = u64::from_be_bytes(record[2..10].try_into().expect("8 bytes"));
    if token_fingerprint != fingerprint {
        return Err(invalid());
    }
    let position = i64::from_be_bytes(record[10..18].try_into().expect("8 bytes"));
    let id_len = usize::from(record[18]);
    if record.len() != 19 + id_len {
        return Err(invalid());
    }
    let id = std::str::from_utf8(&record[19..]).map_err(|_| invalid())?;
    Ok(Cursor {
        position,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(caller: &str) -> Fingerprint {
        Fingerprint::new("agynio.api.users.v1.UsersService/ListAPITokens").with(caller)
    }

    fn page_after(token: &str) -> Result<Page, Error> {
        Page::parse(20, token, SortOrder::Descending, fingerprint("alice"))
    }

    #[test]
    fn page_size_defaults_and_clamps() {
        let zero = Page::parse(0, "", SortOrder::Ascending, fingerprint("a")).unwrap();
        assert_eq!(zero.limit, DEFAULT_PAGE_SIZE);
        let huge = Page::parse(10_000, "", SortOrder::Ascending, fingerprint("a")).unwrap();
        assert_eq!(huge.limit, MAX_PAGE_SIZE);
    }

    #[test]
    fn negative_page_size_is_invalid() {
        let error = Page::parse(-1, "", SortOrder::Ascending, fingerprint("a")).unwrap_err();
        assert_eq!(error.message(), "page_size: must not be negative");
    }

    #[test]
    fn token_round_trips() {
        let page = page_after("").unwrap();
        let rows: Vec<i64> = (0..25).collect();
        let (rows, token) = page.finish(rows, |row| Cursor {
            position: *row,
            id: format!("id-{row}"),
        });
        assert_eq!(rows.len(), 20);
        let next = page_after(&token).unwrap();
        assert_eq!(
            next.after,
            Some(Cursor {
                position: 19,
                id: "id-19".into()
            })
        );
    }

    #[test]
    fn last_page_has_no_token() {
        let page = page_after("").unwrap();
        let (rows, token) = page.finish(vec![1, 2, 3], |row| Cursor {
            position: *row,
            id: String::new(),
        });
        assert_eq!(rows.len(), 3);
        assert!(token.is_empty());
    }

    #[test]
    fn token_of_other_caller_is_rejected() {
        let page = page_after("").unwrap();
        let (_, token) = page.finish((0..30).collect::<Vec<i64>>(), |row| Cursor {
            position: *row,
            id: "x".into(),
        });
        let error = Page::parse(20, &token, SortOrder::Descending, fingerprint("bob")).unwrap_err();
        assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
        let error =
            Page::parse(20, &token, SortOrder::Ascending, fingerprint("alice")).unwrap_err();
        assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    }

    #[test]
    fn garbage_token_is_rejected() {
        for token in ["!!!", "AAAA", &URL_SAFE_NO_PAD.encode([1u8; 40])] {
            let error = page_after(token).unwrap_err();
            assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"), "token {token}");
        }
    }
}
