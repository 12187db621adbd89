//! Minimal base64 (RFC 4648 §4, standard alphabet, `=` padding) for the
//! SDES `inline:` key-salt of RFC 4568 §6.1.
//!
//! The encoder always pads. The decoder accepts padded and unpadded input
//! (some SDES implementations omit the padding of 46-byte AES-256 keys) but
//! rejects characters outside the alphabet, misplaced padding and
//! non-canonical trailing bits.

use super::SdpError;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input` as standard base64 with padding.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3).saturating_mul(4));
    for chunk in input.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sym = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sym(18));
        out.push(sym(12));
        out.push(if chunk.len() > 1 { sym(6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(0) } else { '=' });
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes standard base64; padding is optional but, if present, must be
/// correct.
pub fn decode(input: &str) -> Result<Vec<u8>, SdpError> {
    let bytes = input.as_bytes();
    // Strip at most two trailing '=' and check the padded length.
    let mut data_len = bytes.len();
    let mut pad = 0usize;
    while pad < 2 && data_len > 0 && bytes.get(data_len - 1) == Some(&b'=') {
        data_len -= 1;
        pad += 1;
    }
    if pad > 0 && bytes.len() % 4 != 0 {
        return Err(SdpError::InvalidBase64);
    }
    let data = bytes.get(..data_len).ok_or(SdpError::InvalidBase64)?;
    // A group of 1 symbol cannot encode a byte.
    if data.len() % 4 == 1 {
        return Err(SdpError::InvalidBase64);
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for chunk in data.chunks(4) {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = value(c).ok_or(SdpError::InvalidBase64)?;
            n |= v << (18 - 6 * i as u32);
        }
        let [_, a, b, c] = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&[a, b, c]),
            3 => {
                if c != 0 {
                    return Err(SdpError::InvalidBase64);
                }
                out.extend_from_slice(&[a, b]);
            }
            2 => {
                if b != 0 || c != 0 {
                    return Err(SdpError::InvalidBase64);
                }
                out.push(a);
            }
            _ => return Err(SdpError::InvalidBase64),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors() {
        // RFC 4648 §10.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn unpadded_input_is_accepted() {
        assert_eq!(decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode("Zm9vYmE").unwrap(), b"fooba");
    }

    #[test]
    fn invalid_input_is_rejected() {
        for bad in [
            "Zm9v!", "Z", "Zm9vY", "Zg=", "=Zg=", "Zm=v", "Zh==", "Zm9=", "Zm 9v",
        ] {
            assert_eq!(decode(bad), Err(SdpError::InvalidBase64), "{bad}");
        }
    }

    #[test]
    fn round_trip_all_lengths() {
        let data: Vec<u8> = (0u8..=255).collect();
        for len in 0..64 {
            let slice = &data[..len];
            assert_eq!(decode(&encode(slice)).unwrap(), slice);
        }
    }

    #[test]
    fn rfc4568_example_key_decodes_to_30_bytes() {
        // A key-salt from the RFC 4568 examples.
        let key = decode("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz").unwrap();
        assert_eq!(key.len(), 30);
        assert_eq!(encode(&key), "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");
    }
}
