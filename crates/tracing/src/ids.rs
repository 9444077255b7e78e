//! Trace and span ids: lowercase hex in storage and events, bytes on the
//! wire.

use agyn_core::{Error, Result};

pub const TRACE_ID_LEN: usize = 16;
pub const SPAN_ID_LEN: usize = 8;

/// Encodes bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Decodes hex of either case. Returns `None` for an odd length or a
/// character that is not a hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

/// Validates a request's trace id and returns it as hex.
pub fn trace_id_field(field: &str, bytes: &[u8]) -> Result<String> {
    if bytes.len() != TRACE_ID_LEN {
        return Err(Error::invalid_field(
            field,
            &format!("must be {TRACE_ID_LEN} bytes, got {}", bytes.len()),
        ));
    }
    Ok(to_hex(bytes))
}

/// Validates a request's span id and returns it as hex.
pub fn span_id_field(field: &str, bytes: &[u8]) -> Result<String> {
    if bytes.len() != SPAN_ID_LEN {
        return Err(Error::invalid_field(
            field,
            &format!("must be {SPAN_ID_LEN} bytes, got {}", bytes.len()),
        ));
    }
    Ok(to_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "007fabff");
        assert_eq!(from_hex("007fABff").unwrap(), bytes);
    }

    #[test]
    fn hex_rejects_bad_text() {
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
