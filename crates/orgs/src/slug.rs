//! Organization slugs: DNS labels, unique cluster-wide.

use rand::Rng as _;

/// Longest slug.
pub const MAX_LEN: usize = 63;

/// Returns whether `slug` matches `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$` and has at
/// most [`MAX_LEN`] characters.
pub fn is_valid(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Derives a slug from a name: lowercase, every run of other characters
/// becomes one `-`, no `-` at either end, at most [`MAX_LEN`]
/// characters; `org` when nothing is left.
pub fn derive(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for character in name.to_lowercase().chars() {
        if character.is_ascii_lowercase() || character.is_ascii_digit() {
            slug.push(character);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = fit(&slug, MAX_LEN);
    if slug.is_empty() {
        "org".to_string()
    } else {
        slug
    }
}

/// Candidates for a derived slug in the order they are tried: the base,
/// `<base>-2` to `<base>-99`, then `<base>-<4 random characters>`
/// forever. The base is shortened so every candidate fits.
pub fn candidates(base: &str) -> impl Iterator<Item = String> + '_ {
    let numbered = (2..=99).map(move |number| suffixed(base, &number.to_string()));
    let random = std::iter::repeat_with(move || suffixed(base, &random_suffix()));
    std::iter::once(base.to_string())
        .chain(numbered)
        .chain(random)
}

fn suffixed(base: &str, suffix: &str) -> String {
    let head = fit(base, MAX_LEN - suffix.len() - 1);
    if head.is_empty() {
        suffix.to_string()
    } else {
        format!("{head}-{suffix}")
    }
}

/// Cuts `value` (ASCII) to `len` bytes and trims `-` from both ends.
fn fit(value: &str, len: usize) -> String {
    value[..value.len().min(len)].trim_matches('-').to_string()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_dns_labels() {
        assert!(is_valid("a"));
        assert!(is_valid("acme-corp-2"));
        assert!(is_valid(&"a".repeat(63)));
        assert!(!is_valid(&"a".repeat(64)));
        assert!(!is_valid(""));
        assert!(!is_valid("-acme"));
        assert!(!is_valid("acme-"));
        assert!(!is_valid("Acme"));
        assert!(!is_valid("ac_me"));
    }

    #[test]
    fn derives_from_names() {
        assert_eq!(derive("Acme Corp"), "acme-corp");
        assert_eq!(derive("  --Ünïcode & Co.  "), "n-code-co");
        assert_eq!(derive("***"), "org");
        assert_eq!(derive(""), "org");
        let long = derive(&"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert_eq!(derive(&format!("{}-tail", "y".repeat(62))), "y".repeat(62));
    }

    #[test]
    fn candidates_fit_and_stay_valid() {
        let base = "z".repeat(63);
        let mut all = candidates(&base);
        assert_eq!(all.next().unwrap(), base);
        let second = all.next().unwrap();
        assert_eq!(second, format!("{}-2", "z".repeat(61)));
        let rest: Vec<String> = all.take(120).collect();
        assert_eq!(rest[96], format!("{}-99", "z".repeat(60)));
        for candidate in &rest {
            assert!(is_valid(candidate), "{candidate}");
        }
        let random = &rest[97];
        assert_eq!(random.len(), 63);
        assert!(random.starts_with(&"z".repeat(58)));
    }
}
