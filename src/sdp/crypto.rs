//! SDES `a=crypto` attributes (RFC 4568).
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]      RFC 4568 §4
//! key-params = key-param *(";" key-param)
//! key-param  = "inline:" key-salt ["|" lifetime] ["|" mki ":" length]  RFC 4568 §6.1
//! ```

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;

use super::SdpError;

/// Encodes `input` as standard base64 (RFC 4648 §4) with `=` padding, as
/// the SDES `inline:` key-salt of RFC 4568 §6.1 is written.
pub fn base64_encode(input: &[u8]) -> String {
    STANDARD.encode(input)
}

/// Decodes standard base64. Padding is optional (some SDES implementations
/// omit the padding of 46-byte AES-256 keys) but, if present, must be
/// complete; characters outside the alphabet and non-canonical trailing
/// bits are rejected.
pub fn base64_decode(input: &str) -> Result<Vec<u8>, SdpError> {
    let engine = if input.ends_with('=') {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(input).map_err(|_| SdpError::InvalidBase64)
}

/// An SRTP crypto-suite name (RFC 4568 §6.2, RFC 6188, RFC 7714).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// `F8_128_HMAC_SHA1_80` (RFC 4568 §6.2.3).
    F8_128HmacSha1_80,
    /// `AES_192_CM_HMAC_SHA1_80` (RFC 6188).
    Aes192CmHmacSha1_80,
    /// `AES_192_CM_HMAC_SHA1_32` (RFC 6188).
    Aes192CmHmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188).
    Aes256CmHmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188).
    Aes256CmHmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714).
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714).
    AeadAes256Gcm,
    /// Any other suite name, kept verbatim; RFC 4568 §5.1.2 has the answerer
    /// ignore crypto lines with unknown suites.
    Other(String),
}

impl CryptoSuite {
    /// Parses a suite name (case-sensitive, as registered).
    pub fn parse(name: &str) -> CryptoSuite {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => CryptoSuite::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => CryptoSuite::AesCm128HmacSha1_32,
            "F8_128_HMAC_SHA1_80" => CryptoSuite::F8_128HmacSha1_80,
            "AES_192_CM_HMAC_SHA1_80" => CryptoSuite::Aes192CmHmacSha1_80,
            "AES_192_CM_HMAC_SHA1_32" => CryptoSuite::Aes192CmHmacSha1_32,
            "AES_256_CM_HMAC_SHA1_80" => CryptoSuite::Aes256CmHmacSha1_80,
            "AES_256_CM_HMAC_SHA1_32" => CryptoSuite::Aes256CmHmacSha1_32,
            "AEAD_AES_128_GCM" => CryptoSuite::AeadAes128Gcm,
            "AEAD_AES_256_GCM" => CryptoSuite::AeadAes256Gcm,
            other => CryptoSuite::Other(other.to_owned()),
        }
    }

    /// The registered name.
    pub fn as_str(&self) -> &str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            CryptoSuite::F8_128HmacSha1_80 => "F8_128_HMAC_SHA1_80",
            CryptoSuite::Aes192CmHmacSha1_80 => "AES_192_CM_HMAC_SHA1_80",
            CryptoSuite::Aes192CmHmacSha1_32 => "AES_192_CM_HMAC_SHA1_32",
            CryptoSuite::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            CryptoSuite::Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            CryptoSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            CryptoSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
            CryptoSuite::Other(s) => s,
        }
    }

    /// Length in bytes of the concatenated master key and master salt the
    /// `inline:` parameter carries, or `None` for an unknown suite.
    pub fn key_salt_len(&self) -> Option<usize> {
        match self {
            // 128-bit key + 112-bit salt (RFC 4568 §6.2.1).
            CryptoSuite::AesCm128HmacSha1_80
            | CryptoSuite::AesCm128HmacSha1_32
            | CryptoSuite::F8_128HmacSha1_80 => Some(30),
            // RFC 6188: 192/256-bit key + 112-bit salt.
            CryptoSuite::Aes192CmHmacSha1_80 | CryptoSuite::Aes192CmHmacSha1_32 => Some(38),
            CryptoSuite::Aes256CmHmacSha1_80 | CryptoSuite::Aes256CmHmacSha1_32 => Some(46),
            // RFC 7714: 96-bit salt.
            CryptoSuite::AeadAes128Gcm => Some(28),
            CryptoSuite::AeadAes256Gcm => Some(44),
            CryptoSuite::Other(_) => None,
        }
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The master key index of a key parameter (RFC 4568 §6.1 `mki`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mki {
    /// Decimal MKI value as written.
    pub value: String,
    /// MKI length in bytes on the wire (1..=128).
    pub length: u8,
}

/// A master key lifetime (RFC 4568 §6.1), kept in the form it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// `2^n` packets.
    Power(u32),
    /// A decimal number of packets.
    Packets(u64),
}

impl Lifetime {
    /// The lifetime in packets.
    pub fn packets(self) -> u64 {
        match self {
            Lifetime::Power(n) => 2u64.checked_pow(n).unwrap_or(u64::MAX),
            Lifetime::Packets(p) => p,
        }
    }
}

/// One `inline:` key parameter. Its key is wiped when dropped and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// Master key followed by master salt.
    pub key_salt: Vec<u8>,
    /// Master key lifetime (`2^31` or decimal), if given.
    pub lifetime: Option<Lifetime>,
    /// The MKI, if the key parameter carries one.
    pub mki: Option<Mki>,
}

/// A parsed or locally built `a=crypto` attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoLine {
    /// Tag (1..=9 digits), echoed in the answer (RFC 4568 §5.1.2).
    pub tag: u32,
    /// Crypto suite.
    pub suite: CryptoSuite,
    /// One or more key parameters.
    pub keys: Vec<KeyParam>,
    /// Session parameters (`KDR=`, `UNENCRYPTED_SRTP`, `WSH=` …), verbatim.
    pub session_params: Vec<String>,
}

impl std::fmt::Debug for KeyParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyParam")
            .field(
                "key_salt",
                &format_args!("<{} bytes redacted>", self.key_salt.len()),
            )
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

impl Drop for KeyParam {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_salt);
    }
}

fn parse_lifetime(s: &str) -> Result<Lifetime, SdpError> {
    if let Some(exp) = s.strip_prefix("2^") {
        let exp: u32 = parse_digits(exp)?;
        // The lifetime must fit in 64 bits (SRTP itself caps it at 2^48, RFC 3711).
        if exp > 63 {
            return Err(SdpError::InvalidCrypto);
        }
        return Ok(Lifetime::Power(exp));
    }
    parse_digits(s).map(Lifetime::Packets)
}

fn parse_digits<T: std::str::FromStr>(s: &str) -> Result<T, SdpError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SdpError::InvalidCrypto);
    }
    s.parse().map_err(|_| SdpError::InvalidCrypto)
}

fn parse_key_param(s: &str) -> Result<KeyParam, SdpError> {
    let rest = s.strip_prefix("inline:").ok_or(SdpError::InvalidCrypto)?;
    let mut parts = rest.split('|');
    let key_salt =
        base64_decode(parts.next().unwrap_or("")).map_err(|_| SdpError::InvalidCrypto)?;
    if key_salt.is_empty() {
        return Err(SdpError::InvalidCrypto);
    }
    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        if let Some((value, len)) = part.split_once(':') {
            if mki.is_some() {
                return Err(SdpError::InvalidCrypto);
            }
            // mki-value = 1*128DIGIT, mki-length = 1*3DIGIT (1..=128).
            let length: u8 = parse_digits(len)?;
            if value.is_empty()
                || value.len() > 128
                || !value.bytes().all(|b| b.is_ascii_digit())
                || !(1..=128).contains(&length)
            {
                return Err(SdpError::InvalidCrypto);
            }
            mki = Some(Mki {
                value: value.to_owned(),
                length,
            });
        } else {
            if lifetime.is_some() || mki.is_some() {
                return Err(SdpError::InvalidCrypto);
            }
            lifetime = Some(parse_lifetime(part)?);
        }
    }
    Ok(KeyParam {
        key_salt,
        lifetime,
        mki,
    })
}

impl CryptoLine {
    /// Our own crypto line for a suite with a 30-byte key-salt
    /// (AES_CM_128_HMAC_SHA1_80/32, F8_128_HMAC_SHA1_80). The key material
    /// comes from the caller: this module has no randomness.
    pub fn new(
        tag: u32,
        suite: CryptoSuite,
        master_key_salt: [u8; 30],
    ) -> Result<CryptoLine, SdpError> {
        CryptoLine::with_key(tag, suite, master_key_salt.to_vec())
    }

    /// Our own crypto line for any known suite; the key-salt length must match
    /// the suite.
    pub fn with_key(
        tag: u32,
        suite: CryptoSuite,
        key_salt: Vec<u8>,
    ) -> Result<CryptoLine, SdpError> {
        let expected = suite.key_salt_len().ok_or(SdpError::InvalidCrypto)?;
        if key_salt.len() != expected || tag > 999_999_999 {
            return Err(SdpError::InvalidCrypto);
        }
        Ok(CryptoLine {
            tag,
            suite,
            keys: vec![KeyParam {
                key_salt,
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        })
    }

    /// Parses the attribute value (what follows `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoLine, SdpError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_s = fields.next().ok_or(SdpError::InvalidCrypto)?;
        if tag_s.len() > 9 {
            return Err(SdpError::InvalidCrypto);
        }
        let tag: u32 = parse_digits(tag_s)?;
        let suite = CryptoSuite::parse(fields.next().ok_or(SdpError::InvalidCrypto)?);
        let key_params = fields.next().ok_or(SdpError::InvalidCrypto)?;
        let keys = key_params
            .split(';')
            .map(parse_key_param)
            .collect::<Result<Vec<_>, _>>()?;
        let session_params = fields.map(str::to_owned).collect();
        Ok(CryptoLine {
            tag,
            suite,
            keys,
            session_params,
        })
    }

    /// The master key and salt of the first key parameter.
    pub fn master_key_salt(&self) -> &[u8] {
        self.keys.first().map_or(&[], |k| k.key_salt.as_slice())
    }

    /// True if any key parameter carries an MKI: SRTP packets would then carry
    /// the MKI field, which our SRTP layer does not implement.
    pub fn requires_mki(&self) -> bool {
        self.keys.iter().any(|k| k.mki.is_some())
    }

    /// True if the suite is known, every key has the suite's length, and no
    /// MKI is needed: a line the media layer can use.
    pub fn is_usable(&self) -> bool {
        match self.suite.key_salt_len() {
            Some(len) => {
                !self.requires_mki()
                    && self.keys.len() == 1
                    && self.keys.iter().all(|k| k.key_salt.len() == len)
            }
            None => false,
        }
    }

    /// The full SDP line without line end: `a=crypto:...`.
    pub fn to_attribute(&self) -> String {
        format!("a=crypto:{self}")
    }
}

impl fmt::Display for CryptoLine {
    /// The attribute value (what follows `a=crypto:`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite)?;
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "inline:{}", base64_encode(&key.key_salt))?;
            if let Some(lifetime) = key.lifetime {
                match lifetime {
                    Lifetime::Power(n) => write!(f, "|2^{n}")?,
                    Lifetime::Packets(p) => write!(f, "|{p}")?,
                }
            }
            if let Some(mki) = &key.mki {
                write!(f, "|{}:{}", mki.value, mki.length)?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC4568_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn base64_rfc4648_test_vectors() {
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
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn base64_unpadded_input_is_accepted() {
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE").unwrap(), b"fooba");
    }

    #[test]
    fn base64_invalid_input_is_rejected() {
        // Outside the alphabet, a lone symbol, partial or misplaced padding,
        // non-canonical trailing bits, whitespace.
        for bad in [
            "Zm9v!", "Z", "Zm9vY", "Zg=", "=Zg=", "Zm=v", "Zh==", "Zm9=", "Zm 9v",
        ] {
            assert_eq!(base64_decode(bad), Err(SdpError::InvalidBase64), "{bad}");
        }
    }

    #[test]
    fn base64_round_trip_all_lengths() {
        let data: Vec<u8> = (0u8..=255).collect();
        for len in 0..64 {
            let slice = &data[..len];
            assert_eq!(base64_decode(&base64_encode(slice)).unwrap(), slice);
        }
    }

    #[test]
    fn rfc4568_example_key_decodes_to_30_bytes() {
        let key = base64_decode(RFC4568_KEY).unwrap();
        assert_eq!(key.len(), 30);
        assert_eq!(base64_encode(&key), RFC4568_KEY);
    }

    #[test]
    fn unpadded_aes256_key_is_accepted() {
        // A 46-byte AES_256_CM key-salt is 62 symbols + "==", often sent
        // without the padding.
        let key: Vec<u8> = (0u8..46).collect();
        let padded = base64_encode(&key);
        assert!(padded.ends_with("=="));
        let v = format!(
            "1 AES_256_CM_HMAC_SHA1_80 inline:{}",
            padded.trim_end_matches('=')
        );
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.master_key_salt(), key.as_slice());
        assert!(c.is_usable());
        // We always write the padding.
        assert!(c.to_string().ends_with("=="));
    }

    #[test]
    fn parses_rfc4568_example_with_lifetime_and_mki() {
        // The RFC 4568 §4 example form (lifetime and MKI).
        let v = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:4");
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.keys[0].lifetime, Some(Lifetime::Power(20)));
        assert_eq!(c.keys[0].lifetime.map(Lifetime::packets), Some(1 << 20));
        assert_eq!(
            c.keys[0].mki,
            Some(Mki {
                value: "1".into(),
                length: 4
            })
        );
        assert!(c.requires_mki());
        assert!(!c.is_usable());
        assert_eq!(c.master_key_salt().len(), 30);
    }

    #[test]
    fn parses_plain_line_and_session_params() {
        let v = format!("2 AES_CM_128_HMAC_SHA1_32 inline:{RFC4568_KEY} KDR=1 UNENCRYPTED_SRTCP");
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.tag, 2);
        assert_eq!(c.suite, CryptoSuite::AesCm128HmacSha1_32);
        assert_eq!(c.session_params, vec!["KDR=1", "UNENCRYPTED_SRTCP"]);
        assert!(!c.requires_mki());
        assert!(c.is_usable());
        assert_eq!(c.to_string(), v);
    }

    #[test]
    fn lifetime_decimal_and_power_round_trip() {
        let v = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^31");
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.keys[0].lifetime.map(Lifetime::packets), Some(1 << 31));
        assert_eq!(c.to_string(), v);
        let v = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|1000");
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.keys[0].lifetime, Some(Lifetime::Packets(1000)));
        assert_eq!(c.to_string(), v);
    }

    #[test]
    fn multiple_keys_need_mki() {
        let v = format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32;inline:{RFC4568_KEY}|2^20|2:32"
        );
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.keys.len(), 2);
        assert!(c.requires_mki());
        assert_eq!(c.to_string(), v);
    }

    #[test]
    fn unknown_suite_is_kept_but_not_usable() {
        let v = format!("3 FOO_BAR inline:{RFC4568_KEY}");
        let c = CryptoLine::parse(&v).unwrap();
        assert_eq!(c.suite, CryptoSuite::Other("FOO_BAR".into()));
        assert!(!c.is_usable());
    }

    #[test]
    fn wrong_key_length_is_not_usable() {
        let v = "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9vYmFy";
        let c = CryptoLine::parse(v).unwrap();
        assert!(!c.is_usable());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "",
            "x AES_CM_128_HMAC_SHA1_80 inline:Zm9v",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:Zm9v",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 key:Zm9v",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9v|2^99",
            "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9v|1:0",
            "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9v|1:999",
            "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9v|1:4|2^20",
            "1 AES_CM_128_HMAC_SHA1_80 inline:Zm9v|x",
        ] {
            assert_eq!(
                CryptoLine::parse(bad),
                Err(SdpError::InvalidCrypto),
                "{bad}"
            );
        }
    }

    #[test]
    fn new_builds_our_line() {
        let key: [u8; 30] = core::array::from_fn(|i| i as u8);
        let c = CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, key).unwrap();
        let line = c.to_attribute();
        assert_eq!(
            line,
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
        );
        let back = CryptoLine::parse(line.strip_prefix("a=crypto:").unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(back.is_usable());
        // A 30-byte key does not fit AES-256.
        assert_eq!(
            CryptoLine::new(1, CryptoSuite::Aes256CmHmacSha1_80, key),
            Err(SdpError::InvalidCrypto)
        );
        assert_eq!(
            CryptoLine::new(1, CryptoSuite::Other("X".into()), key),
            Err(SdpError::InvalidCrypto)
        );
    }
}
