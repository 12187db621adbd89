//! PKCS#7 "certs-only" (degenerate SignedData, RFC 5652 §5 / RFC 2315 §9.1):
//! a SignedData with no signers, used by Windows and gateway vendors to
//! import a CA certificate (`.p7b`).

use super::der;

const OID_SIGNED_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 2];
const OID_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];

/// DER `ContentInfo { signedData, SignedData { version 1, digestAlgorithms {},
/// encapContentInfo { data }, certificates [0] IMPLICIT SET OF, signerInfos {} } }`.
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    // `certificates [0] IMPLICIT CertificateSet`: SET OF sorted (X.690 §11.6).
    let mut sorted: Vec<&[u8]> = certs.to_vec();
    sorted.sort();
    let certificates = der::cons(der::context(0), &sorted);
    let signed_data = der::seq(&[
        &der::uint(1),
        &der::set_of(&[]),
        &der::seq(&[&der::oid(OID_DATA)]),
        &certificates,
        &der::set_of(&[]),
    ]);
    der::seq(&[
        &der::oid(OID_SIGNED_DATA),
        &der::cons(der::context(0), &[&signed_data]),
    ])
}

/// Certificates inside a certs-only PKCS#7 (the inverse of [`certs_only`]).
pub fn parse_certs_only(data: &[u8]) -> Result<Vec<Vec<u8>>, der::DerError> {
    let mut ci = der::Reader::new(data).sequence("ContentInfo")?;
    if ci.oid("contentType")? != der::oid_content(OID_SIGNED_DATA).as_slice() {
        return Err(der::DerError("not a PKCS#7 signedData"));
    }
    let mut sd =
        der::Reader::new(ci.expect(der::context(0), "content [0]")?).sequence("SignedData")?;
    let _version = sd.small_uint("version")?;
    let _digests = sd.expect(der::SET, "digestAlgorithms")?;
    let _encap = sd.sequence("encapContentInfo")?;
    let mut out = Vec::new();
    if let Some(certs) = sd.optional(der::context(0))? {
        let mut r = der::Reader::new(certs);
        while !r.is_empty() {
            out.push(r.any()?.raw.to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_structure() {
        let a = der::seq(&[&der::uint(7)]);
        let b = der::seq(&[&der::uint(5)]);
        let p7 = certs_only(&[&a, &b]);
        // Outer ContentInfo carries the signedData OID.
        assert_eq!(p7.get(2..4), Some(&[0x06u8, 0x09][..]));
        let mut got = parse_certs_only(&p7).expect("parse");
        got.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(got, want);
        assert!(parse_certs_only(&p7[..p7.len() - 1]).is_err());
    }
}
