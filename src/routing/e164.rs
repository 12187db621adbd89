//! E.164 numbers: a called number normalised to `+` and digits, its country calling code and
//! region (libphonenumber metadata), and the rule that says whether a call is international.
//!
//! **International**: a number is international when its country calling code differs from the
//! one of the caller's own line URI. Within the North American Numbering Plan (+1), where the
//! calling code is shared by the US, Canada and the Caribbean, the regions libphonenumber
//! assigns are compared: +1 425 → +1 416 (US → CA) is international; +1 425 → +1 206 is not. A
//! +1 number whose region cannot be determined counts as the caller's own region. A caller
//! without a line URI has no country: every call counts as international.
//!
//! Pure: the libphonenumber metadata is static data, parsed once on first use ([`warm_up`]).

use crate::sip::{Scheme, Uri};

/// An E.164 number, with what the international policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E164 {
    /// `+` and digits.
    pub number: String,
    /// Country calling code.
    pub code: u16,
    /// Region (ISO 3166 alpha-2) as libphonenumber assigns it, where it can.
    pub region: Option<String>,
}

/// Normalises a called number to E.164: `+` and digits, visual separators (RFC 3966 §3: `-`,
/// `.`, `(`, `)`) dropped. Digits without `+` are taken as a full international number (the
/// country code first), as gateways send them without the prefix. The country code must exist
/// (libphonenumber metadata) and the length be 8 to 15 digits (ITU-T E.164 §6).
pub fn normalize_e164(raw: &str) -> Option<E164> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = format!("+{digits}");
    let parsed = phonenumber::parse(None, &number).ok()?;
    let code = parsed.code().value();
    let region = parsed.country().id().map(|id| id.as_ref().to_owned());
    Some(E164 {
        number,
        code,
        region,
    })
}

/// Loads libphonenumber's metadata now: the `phonenumber` crate parses its database on first
/// use, which takes hundreds of milliseconds in a debug build. The driver calls this before it
/// opens its listeners, so the first call does not stall the event loop.
pub fn warm_up() {
    let _ = normalize_e164("+14255550100");
}

/// Is `dialled` international for a caller whose own number is `own` (see the module doc)?
pub fn is_international(own: &E164, dialled: &E164) -> bool {
    if own.code != dialled.code {
        return true;
    }
    if own.code == 1 {
        if let (Some(a), Some(b)) = (&own.region, &dialled.region) {
            return a != b;
        }
    }
    false
}

/// The number a Request-URI calls: the `tel:` number, or the user part of a `sip:` URI.
pub(super) fn called_number(uri: &Uri<'_>) -> Option<String> {
    let raw = match uri.scheme() {
        Scheme::Tel => uri.host(),
        _ => uri.user()?,
    };
    let s = std::str::from_utf8(raw).ok()?;
    // A user part may carry parameters of its own (`+1…;isub=…`, RFC 3966 in a SIP URI).
    Some(s.split(';').next().unwrap_or("").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanp_regions_are_compared() {
        let us = normalize_e164("+14255550101").unwrap();
        assert_eq!(us.code, 1);
        let us2 = normalize_e164("+12065550100").unwrap();
        let ca = normalize_e164("+14165550100").unwrap();
        let fr = normalize_e164("+33144556677").unwrap();
        assert_eq!(fr.region.as_deref(), Some("FR"));
        assert!(!is_international(&us, &us2));
        assert!(is_international(&us, &fr));
        if us.region.is_some() && ca.region.is_some() {
            assert!(is_international(&us, &ca), "{us:?} {ca:?}");
        }
        assert!(normalize_e164("+1").is_none());
        assert!(normalize_e164("+12345678901234567").is_none());
    }
}
