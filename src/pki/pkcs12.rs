//! PKCS#12 (RFC 7292) bundles written and read with our own small DER code
//! ([`super::der`]) over aws-lc-rs primitives.
//!
//! Why not a crate: the maintained `p12-keystore` pulls a second crypto stack
//! (RustCrypto `cbc`/`aes`/`sha2`/`hmac`/`pbkdf2`, pre-release `cms`/`pkcs12`
//! crates and `rand` 0.10) while the project uses exactly one provider,
//! aws-lc-rs. The format subset needed is small:
//!
//! * written: the OpenSSL 3 default profile — key in a `pkcs8ShroudedKeyBag`
//!   encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC; RFC 8018 §6.2),
//!   certificates in a plain `data` SafeContents (certificates are public),
//!   integrity by an HMAC-SHA256 MAC keyed with the RFC 7292 Appendix B KDF.
//!   `openssl pkcs12 -info` reads it without `-legacy`.
//! * read: the same plus OpenSSL 3's default (certificates also PBES2
//!   encrypted) and SHA-1 MACs / PBKDF2-HMAC-SHA1. The legacy RC2/3DES PBEs of
//!   OpenSSL 1.x are refused with an explanatory error.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128, AES_192, AES_256,
};
use aws_lc_rs::{digest, hmac, pbkdf2};

use super::der::{self, DerError, Reader};

const ITERATIONS: u32 = 10_000;

const OID_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
const OID_ENCRYPTED_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 6];
const OID_KEY_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 1];
const OID_SHROUDED_KEY_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 2];
const OID_CERT_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 3];
const OID_X509_CERT: &[u64] = &[1, 2, 840, 113_549, 1, 9, 22, 1];
const OID_FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113_549, 1, 9, 20];
const OID_LOCAL_KEY_ID: &[u64] = &[1, 2, 840, 113_549, 1, 9, 21];
const OID_PBES2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 13];
const OID_PBKDF2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 12];
const OID_HMAC_SHA1: &[u64] = &[1, 2, 840, 113_549, 2, 7];
const OID_HMAC_SHA256: &[u64] = &[1, 2, 840, 113_549, 2, 9];
const OID_AES128_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 2];
const OID_AES192_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 22];
const OID_AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const OID_SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("not a PKCS#12 bundle: {0}")]
    Malformed(#[from] DerError),
    #[error("wrong password (PKCS#12 MAC does not verify)")]
    BadPassword,
    #[error("wrong password or corrupt bundle (decryption failed)")]
    DecryptFailed,
    #[error("unsupported PKCS#12 feature: {0}")]
    Unsupported(String),
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// What a bundle holds.
#[derive(Debug, Clone, Default)]
pub struct Pkcs12Contents {
    /// PKCS#8 `PrivateKeyInfo` DER, if a key bag was present.
    pub key_pkcs8: Option<Vec<u8>>,
    /// Certificates (DER), the one bound to the key (localKeyId) first.
    pub certs: Vec<Vec<u8>>,
}

fn random<const N: usize>() -> Result<[u8; N], Pkcs12Error> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| Pkcs12Error::Crypto("random"))?;
    Ok(out)
}

/// Build a password-protected bundle: `key_pkcs8` (PKCS#8 DER) and `chain`
/// (leaf first, DER). The leaf and the key share a localKeyId attribute so
/// importers pair them (RFC 7292 §4.2, PKCS#9 localKeyId).
pub fn encode(
    key_pkcs8: &[u8],
    chain: &[&[u8]],
    password: &str,
    friendly_name: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    let leaf = chain.first().ok_or_else(|| {
        Pkcs12Error::Unsupported("a bundle needs at least one certificate".into())
    })?;
    let local_key_id = digest::digest(&digest::SHA256, leaf);
    let local_key_id = local_key_id.as_ref().get(..20).unwrap_or(&[]);
    let key_attrs = der::set_of(&[
        &der::seq(&[
            &der::oid(OID_FRIENDLY_NAME),
            &der::set_of(&[&der::bmp_string(friendly_name)]),
        ]),
        &der::seq(&[
            &der::oid(OID_LOCAL_KEY_ID),
            &der::set_of(&[&der::octets(local_key_id)]),
        ]),
    ]);

    // Certificates: plain data SafeContents.
    let mut cert_bags = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        let cert_bag = der::seq(&[
            &der::oid(OID_X509_CERT),
            &der::cons(der::context(0), &[&der::octets(cert)]),
        ]);
        let mut parts: Vec<Vec<u8>> = vec![
            der::oid(OID_CERT_BAG),
            der::cons(der::context(0), &[&cert_bag]),
        ];
        if i == 0 {
            parts.push(key_attrs.clone());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        cert_bags.push(der::seq(&refs));
    }
    let cert_refs: Vec<&[u8]> = cert_bags.iter().map(Vec::as_slice).collect();
    let cert_safe = der::seq(&cert_refs);

    // Key: pkcs8ShroudedKeyBag with PBES2.
    let (alg, ciphertext) = pbes2_encrypt(password.as_bytes(), key_pkcs8)?;
    let epki = der::seq(&[&alg, &der::octets(&ciphertext)]);
    let key_bag = der::seq(&[
        &der::oid(OID_SHROUDED_KEY_BAG),
        &der::cons(der::context(0), &[&epki]),
        &key_attrs,
    ]);
    let key_safe = der::seq(&[&key_bag]);

    let auth_safe = der::seq(&[
        &data_content_info(&cert_safe),
        &data_content_info(&key_safe),
    ]);

    // MAC over the AuthenticatedSafe octets (RFC 7292 §5.1 step 3, App. B KDF).
    let mac_salt: [u8; 16] = random()?;
    let mac_key = pkcs12_kdf(
        &digest::SHA256,
        &bmp_password(password),
        &mac_salt,
        3,
        ITERATIONS,
        32,
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key), &auth_safe);
    let mac_data = der::seq(&[
        &der::seq(&[
            &der::seq(&[&der::oid(OID_SHA256), &der::null()]),
            &der::octets(tag.as_ref()),
        ]),
        &der::octets(&mac_salt),
        &der::uint(u64::from(ITERATIONS)),
    ]);

    Ok(der::seq(&[
        &der::uint(3),
        &data_content_info(&auth_safe),
        &mac_data,
    ]))
}

fn data_content_info(content: &[u8]) -> Vec<u8> {
    der::seq(&[
        &der::oid(OID_DATA),
        &der::cons(der::context(0), &[&der::octets(content)]),
    ])
}

/// The password as a NUL-terminated BMPString, as the RFC 7292 Appendix B.1
/// KDF wants it.
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// RFC 7292 Appendix B.2: the PKCS#12 key derivation (here only used with
/// ID 3, the MAC key).
fn pkcs12_kdf(
    alg: &'static digest::Algorithm,
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    n: usize,
) -> Vec<u8> {
    let u = alg.output_len();
    let v = alg.block_len();
    let d = vec![id; v];
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let mut i_buf = fill(salt);
    i_buf.extend(fill(password));
    let mut out = Vec::with_capacity(n + u);
    while out.len() < n {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&d);
        ctx.update(&i_buf);
        let mut a = ctx.finish().as_ref().to_vec();
        for _ in 1..iterations {
            a = digest::digest(alg, &a).as_ref().to_vec();
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // B = A repeated to v bytes; I_j = (I_j + B + 1) mod 2^(8v).
        let b: Vec<u8> = a.iter().copied().cycle().take(v).collect();
        for block in i_buf.chunks_mut(v) {
            let mut carry: u16 = 1;
            for (x, y) in block.iter_mut().zip(b.iter()).rev() {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

fn iterations(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// PBES2 (RFC 8018 §6.2) with PBKDF2-HMAC-SHA256 and AES-256-CBC.
/// Returns the AlgorithmIdentifier DER and the ciphertext.
fn pbes2_encrypt(password: &[u8], plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Pkcs12Error> {
    let salt: [u8; 16] = random()?;
    let iv: [u8; 16] = random()?;
    let mut key = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations(ITERATIONS),
        &salt,
        password,
        &mut key,
    );
    let cipher_key =
        UnboundCipherKey::new(&AES_256, &key).map_err(|_| Pkcs12Error::Crypto("AES key"))?;
    let enc = PaddedBlockEncryptingKey::cbc_pkcs7(cipher_key)
        .map_err(|_| Pkcs12Error::Crypto("AES-CBC"))?;
    let mut buf = plain.to_vec();
    enc.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| Pkcs12Error::Crypto("AES-CBC encrypt"))?;
    let alg = der::seq(&[
        &der::oid(OID_PBES2),
        &der::seq(&[
            &der::seq(&[
                &der::oid(OID_PBKDF2),
                &der::seq(&[
                    &der::octets(&salt),
                    &der::uint(u64::from(ITERATIONS)),
                    &der::seq(&[&der::oid(OID_HMAC_SHA256), &der::null()]),
                ]),
            ]),
            &der::seq(&[&der::oid(OID_AES256_CBC), &der::octets(&iv)]),
        ]),
    ]);
    Ok((alg, buf))
}

fn is_oid(content: &[u8], arcs: &[u64]) -> bool {
    content == der::oid_content(arcs).as_slice()
}

/// Decrypt with a PBES2 AlgorithmIdentifier (given as the SEQUENCE content).
fn pbes2_decrypt(alg_content: &[u8], password: &[u8], data: &[u8]) -> Result<Vec<u8>, Pkcs12Error> {
    let mut alg = Reader::new(alg_content);
    let scheme = alg.oid("encryption algorithm")?;
    if !is_oid(scheme, OID_PBES2) {
        return Err(Pkcs12Error::Unsupported(
            "legacy password-based encryption (RC2/3DES, OpenSSL 1.x style); \
             re-export with OpenSSL 3 defaults (PBES2/AES)"
                .into(),
        ));
    }
    let mut params = alg.sequence("PBES2 parameters")?;
    let mut kdf = params.sequence("PBES2 key derivation")?;
    if !is_oid(kdf.oid("KDF")?, OID_PBKDF2) {
        return Err(Pkcs12Error::Unsupported(
            "PBES2 KDF other than PBKDF2".into(),
        ));
    }
    let mut kdf_params = kdf.sequence("PBKDF2 parameters")?;
    let salt = kdf_params.octet_string("PBKDF2 salt")?;
    let iter = kdf_params.small_uint("PBKDF2 iterations")?;
    let iter = u32::try_from(iter)
        .ok()
        .filter(|i| *i > 0 && *i <= 10_000_000)
        .ok_or(Pkcs12Error::Unsupported(
            "PBKDF2 iteration count out of range".into(),
        ))?;
    let mut key_len: Option<u64> = None;
    let mut prf = pbkdf2::PBKDF2_HMAC_SHA1;
    while !kdf_params.is_empty() {
        let t = kdf_params.any()?;
        match t.tag {
            der::INTEGER => key_len = Reader::new(t.raw).small_uint("keyLength").ok(),
            der::SEQUENCE => {
                let mut p = Reader::new(t.content);
                let prf_oid = p.oid("PRF")?;
                prf = if is_oid(prf_oid, OID_HMAC_SHA256) {
                    pbkdf2::PBKDF2_HMAC_SHA256
                } else if is_oid(prf_oid, OID_HMAC_SHA1) {
                    pbkdf2::PBKDF2_HMAC_SHA1
                } else {
                    return Err(Pkcs12Error::Unsupported("PBKDF2 PRF".into()));
                };
            }
            _ => return Err(DerError("PBKDF2 parameters").into()),
        }
    }
    let mut enc = params.sequence("PBES2 encryption scheme")?;
    let enc_oid = enc.oid("cipher")?;
    let (cipher, len) = if is_oid(enc_oid, OID_AES256_CBC) {
        (&AES_256, 32usize)
    } else if is_oid(enc_oid, OID_AES192_CBC) {
        (&AES_192, 24)
    } else if is_oid(enc_oid, OID_AES128_CBC) {
        (&AES_128, 16)
    } else {
        return Err(Pkcs12Error::Unsupported(
            "PBES2 cipher other than AES-CBC".into(),
        ));
    };
    if key_len.is_some_and(|l| l != len as u64) {
        return Err(Pkcs12Error::Unsupported("PBKDF2 keyLength mismatch".into()));
    }
    let iv: [u8; 16] = enc
        .octet_string("IV")?
        .try_into()
        .map_err(|_| DerError("IV length"))?;
    let mut key = vec![0u8; len];
    pbkdf2::derive(prf, iterations(iter), salt, password, &mut key);
    let cipher_key =
        UnboundCipherKey::new(cipher, &key).map_err(|_| Pkcs12Error::Crypto("AES key"))?;
    let dec = PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key)
        .map_err(|_| Pkcs12Error::Crypto("AES-CBC"))?;
    let mut buf = data.to_vec();
    let plain = dec
        .decrypt(&mut buf, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| Pkcs12Error::DecryptFailed)?;
    Ok(plain.to_vec())
}

/// Does this look like a PFX (SEQUENCE { INTEGER 3, ContentInfo, ... })?
pub fn looks_like_pkcs12(data: &[u8]) -> bool {
    let Ok(mut pfx) = Reader::new(data).sequence("PFX") else {
        return false;
    };
    matches!(pfx.small_uint("version"), Ok(3))
}

/// Read a bundle, verifying its MAC, decrypting key and certificates.
pub fn decode(data: &[u8], password: &str) -> Result<Pkcs12Contents, Pkcs12Error> {
    let mut pfx = Reader::new(data).sequence("PFX")?;
    if pfx.small_uint("PFX version")? != 3 {
        return Err(Pkcs12Error::Unsupported("PFX version other than 3".into()));
    }
    let mut auth_ci = pfx.sequence("authSafe")?;
    if !is_oid(auth_ci.oid("authSafe contentType")?, OID_DATA) {
        return Err(Pkcs12Error::Unsupported(
            "public-key integrity mode (signedData authSafe)".into(),
        ));
    }
    let auth_safe = Reader::new(auth_ci.expect(der::context(0), "authSafe [0]")?)
        .octet_string("authSafe octets")?;

    if let Some(mac_data) = pfx.optional(der::SEQUENCE)? {
        verify_mac(mac_data, password, auth_safe)?;
    }

    let mut out = Pkcs12Contents::default();
    let mut leaf_id: Option<Vec<u8>> = None;
    let mut certs: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut safes = Reader::new(auth_safe).sequence("AuthenticatedSafe")?;
    while !safes.is_empty() {
        let mut ci = safes.sequence("ContentInfo")?;
        let ct = ci.oid("contentType")?;
        let explicit = ci.expect(der::context(0), "ContentInfo [0]")?;
        let safe_contents: Vec<u8> = if is_oid(ct, OID_DATA) {
            Reader::new(explicit).octet_string("data")?.to_vec()
        } else if is_oid(ct, OID_ENCRYPTED_DATA) {
            let mut ed = Reader::new(explicit).sequence("EncryptedData")?;
            let _version = ed.small_uint("EncryptedData version")?;
            let mut eci = ed.sequence("EncryptedContentInfo")?;
            let _ct = eci.oid("EncryptedContentInfo contentType")?;
            let alg = eci.sequence("contentEncryptionAlgorithm")?;
            let alg_content = alg_content_of(alg);
            // encryptedContent [0] IMPLICIT OCTET STRING (primitive in DER).
            let enc = eci.expect(0x80, "encryptedContent")?;
            pbes2_decrypt(alg_content, password.as_bytes(), enc)?
        } else {
            return Err(Pkcs12Error::Unsupported(
                "enveloped (public-key privacy mode) content".into(),
            ));
        };
        let mut bags = Reader::new(&safe_contents).sequence("SafeContents")?;
        while !bags.is_empty() {
            let mut bag = bags.sequence("SafeBag")?;
            let bag_id = bag.oid("bagId")?;
            let value = bag.expect(der::context(0), "bagValue")?;
            let local_id = match bag.optional(der::SET)? {
                Some(attrs) => local_key_id(attrs)?,
                None => None,
            };
            if is_oid(bag_id, OID_CERT_BAG) {
                let mut cb = Reader::new(value).sequence("CertBag")?;
                if !is_oid(cb.oid("certId")?, OID_X509_CERT) {
                    continue;
                }
                let cert = Reader::new(cb.expect(der::context(0), "certValue")?)
                    .octet_string("certificate")?;
                certs.push((cert.to_vec(), local_id));
            } else if is_oid(bag_id, OID_SHROUDED_KEY_BAG) {
                let mut epki = Reader::new(value).sequence("EncryptedPrivateKeyInfo")?;
                let alg = epki.sequence("EncryptedPrivateKeyInfo algorithm")?;
                let alg_content = alg_content_of(alg);
                let enc = epki.octet_string("encryptedData")?;
                out.key_pkcs8 = Some(pbes2_decrypt(alg_content, password.as_bytes(), enc)?);
                leaf_id = local_id;
            } else if is_oid(bag_id, OID_KEY_BAG) {
                let t = Reader::new(value).any()?;
                out.key_pkcs8 = Some(t.raw.to_vec());
                leaf_id = local_id;
            }
        }
    }
    // Leaf (paired with the key by localKeyId) first, others in file order.
    let leaf_pos = leaf_id
        .as_ref()
        .and_then(|id| certs.iter().position(|(_, l)| l.as_ref() == Some(id)));
    if let Some(pos) = leaf_pos {
        let leaf = certs.remove(pos);
        certs.insert(0, leaf);
    }
    out.certs = certs.into_iter().map(|(c, _)| c).collect();
    Ok(out)
}

/// The content of an AlgorithmIdentifier SEQUENCE still unread in `alg`.
fn alg_content_of(alg: Reader<'_>) -> &[u8] {
    alg.rest()
}

fn local_key_id(attrs: &[u8]) -> Result<Option<Vec<u8>>, DerError> {
    let mut r = Reader::new(attrs);
    while !r.is_empty() {
        let mut attr = r.sequence("attribute")?;
        let id = attr.oid("attribute type")?;
        let values = attr.expect(der::SET, "attribute values")?;
        if is_oid(id, OID_LOCAL_KEY_ID) {
            return Ok(Some(
                Reader::new(values).octet_string("localKeyId")?.to_vec(),
            ));
        }
    }
    Ok(None)
}

fn verify_mac(mac_data: &[u8], password: &str, auth_safe: &[u8]) -> Result<(), Pkcs12Error> {
    let mut md = Reader::new(mac_data);
    let mut digest_info = md.sequence("DigestInfo")?;
    let mut alg = digest_info.sequence("MAC digest algorithm")?;
    let alg_oid = alg.oid("MAC digest OID")?;
    let expected = digest_info.octet_string("MAC digest")?;
    let salt = md.octet_string("MAC salt")?;
    let iter = if md.is_empty() {
        1
    } else {
        md.small_uint("MAC iterations")?
    };
    let iter = u32::try_from(iter)
        .ok()
        .filter(|i| *i > 0 && *i <= 10_000_000)
        .ok_or(Pkcs12Error::Unsupported(
            "MAC iteration count out of range".into(),
        ))?;
    let (d, h) = if is_oid(alg_oid, OID_SHA256) {
        (&digest::SHA256, hmac::HMAC_SHA256)
    } else if is_oid(alg_oid, OID_SHA1) {
        (
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        )
    } else {
        return Err(Pkcs12Error::Unsupported(
            "MAC digest other than SHA-1/SHA-256".into(),
        ));
    };
    let key = pkcs12_kdf(d, &bmp_password(password), salt, 3, iter, d.output_len());
    hmac::verify(&hmac::Key::new(h, &key), auth_safe, expected)
        .map_err(|_| Pkcs12Error::BadPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_matches_rfc7292_style_vector() {
        // Cross-checked with OpenSSL's PKCS12_key_gen_uni (SHA-1, ID 1,
        // password "smeg", salt 0A58CF64530D823F, 1 iteration, 24 bytes) —
        // the classic test vector from the OpenSSL p12 test suite.
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let key = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            &bmp_password("smeg"),
            &salt,
            1,
            1,
            24,
        );
        let hex = data_encoding::HEXUPPER.encode(&key);
        assert_eq!(hex, "8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3");
    }

    #[test]
    fn roundtrip_and_wrong_password() {
        let key = b"not really a key but bytes".to_vec();
        let leaf = der::seq(&[&der::uint(1)]);
        let root = der::seq(&[&der::uint(2)]);
        let p12 = encode(&key, &[&leaf, &root], "s3cret", "gw1").expect("encode");
        assert!(looks_like_pkcs12(&p12));
        let got = decode(&p12, "s3cret").expect("decode");
        assert_eq!(got.key_pkcs8.as_deref(), Some(key.as_slice()));
        assert_eq!(got.certs, vec![leaf, root]);
        assert!(matches!(
            decode(&p12, "wrong"),
            Err(Pkcs12Error::BadPassword)
        ));
    }

    #[test]
    fn truncated_bundles_error_without_panic() {
        let leaf = der::seq(&[&der::uint(1)]);
        let p12 = encode(b"k", &[&leaf], "pw", "x").expect("encode");
        for cut in 0..p12.len() {
            if let Some(prefix) = p12.get(..cut) {
                assert!(decode(prefix, "pw").is_err());
            }
        }
    }
}
