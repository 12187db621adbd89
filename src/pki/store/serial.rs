//! Serial numbers: generated (RFC 5280 §4.1.2.2), written as upper-case hex
//! (the index, `issued/<serial>.pem`) and read back as users type them.

use data_encoding::HEXUPPER_PERMISSIVE;

pub(super) fn random_serial() -> Vec<u8> {
    // RFC 5280 §4.1.2.2: positive, at most 20 octets; CA/B BR §7.1: at least
    // 64 bits of CSPRNG output. 16 random octets, first octet 0x01..=0x7f so
    // the INTEGER is positive and has no leading zero octet.
    let mut s: [u8; 16] = rand::random();
    s[0] = (s[0] & 0x7f).max(1);
    s.to_vec()
}

/// The hex form of a serial in the index: upper or lower case, surrounding
/// whitespace ignored; `None` when empty, of odd length or not hex.
pub(super) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    HEXUPPER_PERMISSIVE.decode(s.as_bytes()).ok()
}

/// A serial as typed by a user (`1A:2B`, `0x1a2b`, lower case) to our form.
pub(super) fn normalize_serial(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_long() {
        for _ in 0..64 {
            let s = random_serial();
            assert_eq!(s.len(), 16);
            assert!(s[0] >= 1 && s[0] <= 0x7f);
        }
        assert_ne!(random_serial(), random_serial());
    }

    #[test]
    fn serial_normalisation() {
        assert_eq!(normalize_serial("1a:2B:03"), "1A2B03");
        assert_eq!(normalize_serial("0x01A2"), "01A2");
        assert_eq!(normalize_serial("001A2B"), "1A2B");
        assert_eq!(hex_decode("7F00"), Some(vec![0x7f, 0]));
        assert_eq!(hex_decode("7F0"), None);
        assert_eq!(hex_decode("ZZ"), None);
        assert_eq!(hex_decode(" 7f0a\n"), Some(vec![0x7f, 0x0a]));
        assert_eq!(hex_decode(""), None);
        assert_eq!(hex_decode("  "), None);
        assert_eq!(hex_decode("7F:00"), None);
        // Hex digits only: the former u8::from_str_radix loop also took a
        // '+' sign per pair ("+F" as 0x0F), which no index line ever holds.
        assert_eq!(hex_decode("+F"), None);
    }
}
