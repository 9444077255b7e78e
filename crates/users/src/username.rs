//! Derivation of a unique username from OIDC claims at user creation.

use rand::Rng;
use sha2::{Digest, Sha256};

const MAX_LEN: usize = 32;

/// Returns the base username for a new user: the first non-empty of the
/// preferred username, the local part of the email and the name,
/// normalised to `[a-z0-9_-]{1,32}`; otherwise `user-<8 hex of sha256(sub)>`.
pub fn base(preferred_username: &str, email: &str, name: &str, subject: &str) -> String {
    let local_part = email.split('@').next().unwrap_or_default();
    [preferred_username, local_part, name]
        .into_iter()
        .find(|source| !source.trim().is_empty())
        .map(normalize)
        .filter(|normalized| !normalized.is_empty())
        .unwrap_or_else(|| hashed(subject))
}

/// Candidates to try in order when `base` is taken: `<base>-2` to
/// `<base>-99`, then five random `<base>-xxxx` suffixes.
pub fn candidates(base: &str) -> impl Iterator<Item = String> + '_ {
    let numbered = (2..=99).map(move |n| with_suffix(base, &n.to_string()));
    let random = (0..5).map(move |_| with_suffix(base, &random_suffix()));
    std::iter::once(base.to_string())
        .chain(numbered)
        .chain(random)
}

/// Returns true when `value` is a valid username.
pub fn is_valid(value: &str) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
        })
}

fn normalize(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for ch in source.to_lowercase().chars() {
        let ch = if ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' {
            ch
        } else {
            '-'
        };
        if ch == '-' && out.ends_with('-') {
            continue;
        }
        out.push(ch);
    }
    let trimmed = out.trim_matches('-');
    trimmed
        .chars()
        .take(MAX_LEN)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn hashed(subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    let hex: String = digest
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("user-{hex}")
}

fn with_suffix(base: &str, suffix: &str) -> String {
    let keep = MAX_LEN - suffix.len() - 1;
    let head: String = base.chars().take(keep).collect();
    format!("{}-{suffix}", head.trim_end_matches('-'))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_prefers_preferred_username() {
        assert_eq!(base("Alice.Smith", "a@x.io", "A", "sub"), "alice-smith");
    }

    #[test]
    fn base_falls_back_to_email_then_name() {
        assert_eq!(base("", "bob@example.com", "Bob", "sub"), "bob");
        assert_eq!(base("", "", "Carol  Jones!", "sub"), "carol-jones");
    }

    #[test]
    fn base_uses_hash_when_nothing_usable() {
        let value = base("", "", "***", "subject-1");
        assert!(value.starts_with("user-"));
        assert_eq!(value.len(), 13);
    }

    #[test]
    fn candidates_stay_within_32_chars() {
        let long = "a".repeat(32);
        for candidate in candidates(&long).take(110) {
            assert!(is_valid(&candidate), "{candidate}");
        }
        let mut iter = candidates("bob");
        assert_eq!(iter.next().as_deref(), Some("bob"));
        assert_eq!(iter.next().as_deref(), Some("bob-2"));
    }
}
