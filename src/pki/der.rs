//! A deliberately small DER (X.690) encoder and reader, enough for the
//! PKCS#12 (RFC 7292) and PKCS#7 certs-only (RFC 2315 / RFC 5652 §5) containers
//! that rcgen does not produce.
//!
//! Only definite-length, single-byte-tag encodings are supported (X.690 §10.1:
//! DER always uses the definite form). The reader never panics on hostile input:
//! every length is checked against the remaining buffer.

use std::fmt;

/// Universal tags used here (X.690 §8).
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const BMP_STRING: u8 = 0x1e;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// `[n]` context-specific, constructed (used for EXPLICIT tagging and
/// IMPLICIT tagging of constructed types).
pub const fn context(n: u8) -> u8 {
    0xa0 | (n & 0x1f)
}

/// A DER decoding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed DER: {}", self.0)
    }
}

impl std::error::Error for DerError {}

// ---------------------------------------------------------------- encoder

/// Encode a length in definite form (X.690 §8.1.3).
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits in seven bits: short form.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = bytes.get(skip..).unwrap_or(&[]);
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// One TLV.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A constructed value from already encoded parts.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    cons(SEQUENCE, parts)
}

/// `SET OF`: DER requires the elements sorted by their encoding (X.690 §11.6).
pub fn set_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted: Vec<&[u8]> = parts.to_vec();
    sorted.sort();
    cons(SET, &sorted)
}

pub fn octets(content: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, content)
}

pub fn null() -> Vec<u8> {
    vec![NULL, 0]
}

/// A non-negative INTEGER (X.690 §8.3: two's complement, minimal octets).
pub fn uint(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = Vec::with_capacity(9);
    let rest = bytes.get(skip..).unwrap_or(&[0]);
    if rest.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(rest);
    tlv(INTEGER, &content)
}

/// An OBJECT IDENTIFIER from its arcs (X.690 §8.19). Arcs come from the
/// constants in this crate, never from input, so a malformed OID is a bug;
/// still we do not panic: a missing second arc encodes as 0.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let first = arcs.first().copied().unwrap_or(0);
    let second = arcs.get(1).copied().unwrap_or(0);
    let mut content = Vec::new();
    push_base128(
        &mut content,
        first.saturating_mul(40).saturating_add(second),
    );
    for arc in arcs.iter().skip(2) {
        push_base128(&mut content, *arc);
    }
    tlv(OID, &content)
}

fn push_base128(out: &mut Vec<u8>, mut value: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        if let Some(slot) = tmp.get_mut(n) {
            *slot = (value & 0x7f) as u8;
        }
        n += 1;
        value >>= 7;
        if value == 0 || n >= tmp.len() {
            break;
        }
    }
    for i in (0..n).rev() {
        let b = tmp.get(i).copied().unwrap_or(0);
        out.push(if i == 0 { b } else { b | 0x80 });
    }
}

/// `BMPString` (UCS-2 big endian), used for PKCS#12 friendlyName.
pub fn bmp_string(s: &str) -> Vec<u8> {
    let content: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    tlv(BMP_STRING, &content)
}

// ---------------------------------------------------------------- reader

/// A cursor over DER-encoded siblings.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    data: &'a [u8],
}

/// One decoded element: its tag, its content octets and its full encoding.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The octets not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// Read the next element, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, DerError> {
        let data = self.data;
        let tag = *data.first().ok_or(DerError("truncated (tag)"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not supported"));
        }
        let first_len = *data.get(1).ok_or(DerError("truncated (length)"))?;
        let (len, header) = if first_len < 0x80 {
            (usize::from(first_len), 2usize)
        } else {
            let n = usize::from(first_len & 0x7f);
            if n == 0 {
                return Err(DerError("indefinite length (BER) is not DER"));
            }
            if n > 4 {
                return Err(DerError("length too large"));
            }
            let len_bytes = data
                .get(2..2 + n)
                .ok_or(DerError("truncated (long length)"))?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        let end = header.checked_add(len).ok_or(DerError("length overflow"))?;
        let content = data
            .get(header..end)
            .ok_or(DerError("truncated (content)"))?;
        let raw = data.get(..end).ok_or(DerError("truncated"))?;
        self.data = data.get(end..).unwrap_or(&[]);
        Ok(Tlv { tag, content, raw })
    }

    /// Read the next element and require `tag`.
    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        let t = self.any()?;
        if t.tag != tag {
            return Err(DerError(what));
        }
        Ok(t.content)
    }

    /// Read the next element if it carries `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        match self.data.first() {
            Some(t) if *t == tag => self.any().map(|t| Some(t.content)),
            _ => Ok(None),
        }
    }

    pub fn sequence(&mut self, what: &'static str) -> Result<Reader<'a>, DerError> {
        self.expect(SEQUENCE, what).map(Reader::new)
    }

    pub fn octet_string(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        self.expect(OCTET_STRING, what)
    }

    /// An OID, returned as its content octets (compare with `oid(..)[2..]`).
    pub fn oid(&mut self, what: &'static str) -> Result<&'a [u8], DerError> {
        self.expect(OID, what)
    }

    /// A small non-negative INTEGER.
    pub fn small_uint(&mut self, what: &'static str) -> Result<u64, DerError> {
        let content = self.expect(INTEGER, what)?;
        if content.is_empty() || content.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(DerError(what));
        }
        let trimmed: &[u8] = match content {
            [0, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        if trimmed.len() > 8 {
            return Err(DerError("integer too large"));
        }
        Ok(trimmed
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

/// The content octets of `oid(arcs)`, for comparing with [`Reader::oid`].
pub fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let encoded = oid(arcs);
    encoded.get(2..).map(<[u8]>::to_vec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_encoding_matches_known_bytes() {
        // id-data 1.2.840.113549.1.7.1 (RFC 2315 §14)
        assert_eq!(
            oid(&[1, 2, 840, 113_549, 1, 7, 1]),
            vec![0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]
        );
        // aes256-CBC 2.16.840.1.101.3.4.1.42
        assert_eq!(
            oid(&[2, 16, 840, 1, 101, 3, 4, 1, 42]),
            vec![0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a]
        );
    }

    #[test]
    fn lengths_short_and_long_form() {
        assert_eq!(tlv(OCTET_STRING, &[1, 2]), vec![4, 2, 1, 2]);
        let big = vec![0u8; 300];
        let enc = tlv(OCTET_STRING, &big);
        assert_eq!(enc.get(..4), Some(&[4u8, 0x82, 0x01, 0x2c][..]));
        let mut r = Reader::new(&enc);
        assert_eq!(r.octet_string("x").map(<[u8]>::len), Ok(300));
        assert!(r.is_empty());
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(uint(0), vec![2, 1, 0]);
        assert_eq!(uint(127), vec![2, 1, 127]);
        assert_eq!(uint(128), vec![2, 2, 0, 128]);
        assert_eq!(uint(2048), vec![2, 2, 8, 0]);
        for v in [0u64, 1, 127, 128, 255, 256, 2048, 65_535, u64::MAX] {
            let enc = uint(v);
            assert_eq!(Reader::new(&enc).small_uint("i"), Ok(v));
        }
    }

    #[test]
    fn set_of_is_sorted() {
        let a = octets(&[2]);
        let b = octets(&[1]);
        assert_eq!(set_of(&[&a, &b]), vec![0x31, 6, 4, 1, 1, 4, 1, 2]);
    }

    #[test]
    fn reader_rejects_truncation_and_ber() {
        assert!(Reader::new(&[0x30]).any().is_err());
        assert!(Reader::new(&[0x30, 0x05, 1]).any().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).any().is_err());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).any().is_err());
        assert!(Reader::new(&[0x1f, 0x01, 0]).any().is_err());
        // Garbage never panics.
        for len in 0..64u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
            let mut r = Reader::new(&data);
            while r.any().is_ok() {}
        }
    }

    #[test]
    fn bmp_string_is_ucs2_be() {
        assert_eq!(bmp_string("ab"), vec![0x1e, 4, 0, b'a', 0, b'b']);
    }
}
