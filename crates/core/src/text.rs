//! Checks of user-supplied text fields.

use crate::Error;

/// Trims a display name and checks it: not empty, at most `max_chars`
/// characters, no control characters. `field` names the request field in
/// the error.
pub fn display_name<'a>(field: &str, value: &'a str, max_chars: usize) -> Result<&'a str, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_trims_and_checks() {
        assert_eq!(display_name("name", "  Acme  ", 10).unwrap(), "Acme");
        assert_eq!(
            display_name("name", "é".repeat(10).as_str(), 10)
                .unwrap()
                .chars()
                .count(),
            10
        );
        let empty = display_name("name", "   ", 10).unwrap_err();
        assert_eq!(empty.message(), "name: must not be empty");
        let long = display_name("name", &"x".repeat(11), 10).unwrap_err();
        assert_eq!(long.message(), "name: must be at most 10 characters");
        let control = display_name("name", "a\u{7}b", 10).unwrap_err();
        assert_eq!(
            control.message(),
            "name: must not contain control characters"
        );
    }
}
