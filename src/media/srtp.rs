//! SRTP/SRTCP for one leg (RFC 3711), with our in-place transform
//! (`srtp_transform`). rtc-srtp, the interop oracle, is a dev-dependency:
//! tests and benches build its contexts themselves.
//!
//! Keys come from SDES (RFC 4568 `a=crypto` inline key||salt, 30 bytes for
//! the AES_CM_128 suites): the relay *protects* what it sends on the leg with
//! the local key and *unprotects* what it receives with the remote key.
//! Replay protection is on for both SRTP and SRTCP (RFC 3711 §3.3.2).

use std::fmt;

use rand::RngCore;
use zeroize::Zeroize;

use super::srtp_transform::{SrtpError, SrtpTransform, SRTCP_TAG_LEN};
use super::MediaError;

/// Length of an AES_CM_128 master key plus master salt (16 + 14).
pub const KEY_SALT_LEN: usize = 30;

/// The SDES crypto suites supported (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`.
    Aes128CmSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (32-bit SRTP tag; SRTCP keeps 80 bits,
    /// RFC 4568 §6.2.2).
    Aes128CmSha1_32,
}

impl SrtpSuite {
    /// Bytes SRTP adds to an RTP packet (the auth tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpSuite::Aes128CmSha1_80 => 10,
            SrtpSuite::Aes128CmSha1_32 => 4,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet (E-flag/index word + tag).
    pub fn rtcp_overhead(self) -> usize {
        4 + SRTCP_TAG_LEN
    }
}

/// Keys of one leg. `Debug` never prints key material; the keys are wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpParams {
    /// Crypto suite.
    pub suite: SrtpSuite,
    /// Our key||salt: protects what the relay sends on this leg.
    pub local_key_salt: [u8; KEY_SALT_LEN],
    /// The peer's key||salt: unprotects what the relay receives.
    pub remote_key_salt: [u8; KEY_SALT_LEN],
}

impl fmt::Debug for SrtpParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpParams")
            .field("suite", &self.suite)
            .field("local_key_salt", &"<redacted>")
            .field("remote_key_salt", &"<redacted>")
            .finish()
    }
}

impl Drop for SrtpParams {
    fn drop(&mut self) {
        self.local_key_salt.zeroize();
        self.remote_key_salt.zeroize();
    }
}

/// A fresh random master key||salt (one per call and direction).
pub fn generate_key_salt() -> [u8; KEY_SALT_LEN] {
    let mut k = [0u8; KEY_SALT_LEN];
    rand::rng().fill_bytes(&mut k);
    k
}

/// Why a packet failed SRTP processing (auth / replay / malformed); the
/// relay counts each kind separately.
pub(crate) type SrtpFail = SrtpError;

/// Copies `pkt` to the front of `out`; `Malformed` when it does not fit.
fn stage(pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpFail> {
    out.get_mut(..pkt.len())
        .ok_or(SrtpFail::Malformed)?
        .copy_from_slice(pkt);
    Ok(pkt.len())
}

/// The two SRTP transforms of one leg (ours, in place, no allocation per
/// packet: see `srtp_transform`).
pub(crate) struct SrtpLeg {
    params: SrtpParams,
    /// Outbound (protect), local key.
    protect: SrtpTransform,
    /// Inbound (unprotect), remote key, replay protection.
    unprotect: SrtpTransform,
}

impl fmt::Debug for SrtpLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpLeg")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl SrtpLeg {
    pub(crate) fn new(params: &SrtpParams) -> Result<Self, MediaError> {
        Ok(SrtpLeg {
            protect: SrtpTransform::new(params.suite, &params.local_key_salt)?,
            unprotect: SrtpTransform::new(params.suite, &params.remote_key_salt)?,
            params: params.clone(),
        })
    }

    pub(crate) fn params(&self) -> &SrtpParams {
        &self.params
    }

    /// RTP → SRTP into `out`; returns the length written.
    pub(crate) fn protect_rtp(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpFail> {
        let n = stage(pkt, out)?;
        self.protect.protect_rtp(out, n)
    }

    /// SRTP → RTP into `out`.
    pub(crate) fn unprotect_rtp(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpFail> {
        let n = stage(pkt, out)?;
        self.unprotect.unprotect_rtp(out, n)
    }

    /// RTCP → SRTCP into `out`.
    pub(crate) fn protect_rtcp(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpFail> {
        let n = stage(pkt, out)?;
        self.protect.protect_rtcp(out, n)
    }

    /// SRTCP → RTCP into `out`.
    pub(crate) fn unprotect_rtcp(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpFail> {
        let n = stage(pkt, out)?;
        self.unprotect.unprotect_rtcp(out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn pair(suite: SrtpSuite) -> (SrtpLeg, SrtpLeg) {
        let (k1, k2) = (generate_key_salt(), generate_key_salt());
        let ours = SrtpLeg::new(&SrtpParams {
            suite,
            local_key_salt: k1,
            remote_key_salt: k2,
        })
        .expect("ours");
        let theirs = SrtpLeg::new(&SrtpParams {
            suite,
            local_key_salt: k2,
            remote_key_salt: k1,
        })
        .expect("theirs");
        (ours, theirs)
    }

    #[test]
    fn keys_are_fresh() {
        assert_ne!(generate_key_salt(), generate_key_salt());
    }

    #[test]
    fn debug_redacts_keys() {
        let p = SrtpParams {
            suite: SrtpSuite::Aes128CmSha1_80,
            local_key_salt: [0xab; 30],
            remote_key_salt: [0xcd; 30],
        };
        let d = format!("{p:?}");
        assert!(d.contains("redacted"));
        assert!(!d.contains("171"), "{d}");
    }

    #[test]
    fn rtp_round_trip_both_suites_with_overhead() {
        for suite in [SrtpSuite::Aes128CmSha1_80, SrtpSuite::Aes128CmSha1_32] {
            let (mut ours, mut theirs) = pair(suite);
            let mut enc = [0u8; 256];
            let mut dec = [0u8; 256];
            let p = rtp(1, b"hello media");
            let n = ours.protect_rtp(&p, &mut enc).expect("protect");
            assert_eq!(n, p.len() + suite.rtp_overhead());
            assert_ne!(enc.get(12..p.len()), p.get(12..), "payload encrypted");
            let m = theirs
                .unprotect_rtp(&enc[..n], &mut dec)
                .expect("unprotect");
            assert_eq!(&dec[..m], &p[..]);
        }
    }

    #[test]
    fn tampering_replay_and_short_packets_are_classified() {
        let (mut ours, mut theirs) = pair(SrtpSuite::Aes128CmSha1_80);
        let mut enc = [0u8; 256];
        let mut dec = [0u8; 256];
        let p = rtp(7, b"payload");
        let n = ours.protect_rtp(&p, &mut enc).expect("protect");
        let mut bad = enc;
        bad[14] ^= 1;
        assert_eq!(
            theirs.unprotect_rtp(&bad[..n], &mut dec),
            Err(SrtpFail::Auth)
        );
        assert!(theirs.unprotect_rtp(&enc[..n], &mut dec).is_ok());
        assert_eq!(
            theirs.unprotect_rtp(&enc[..n], &mut dec),
            Err(SrtpFail::Replay)
        );
        assert!(theirs.unprotect_rtp(&enc[..5], &mut dec).is_err());
        // Output buffer too small.
        let p2 = rtp(8, b"payload");
        let mut tiny = [0u8; 8];
        assert_eq!(ours.protect_rtp(&p2, &mut tiny), Err(SrtpFail::Malformed));
    }

    #[test]
    fn rtcp_round_trip_and_replay() {
        let (mut ours, mut theirs) = pair(SrtpSuite::Aes128CmSha1_32);
        // Receiver report, no blocks: V=2, PT=201, length=1, SSRC.
        let rr = [0x80u8, 201, 0, 1, 1, 2, 3, 4];
        let mut enc = [0u8; 128];
        let mut dec = [0u8; 128];
        let n = ours.protect_rtcp(&rr, &mut enc).expect("protect");
        assert_eq!(n, rr.len() + SrtpSuite::Aes128CmSha1_32.rtcp_overhead());
        let m = theirs
            .unprotect_rtcp(&enc[..n], &mut dec)
            .expect("unprotect");
        assert_eq!(&dec[..m], &rr);
        assert_eq!(
            theirs.unprotect_rtcp(&enc[..n], &mut dec),
            Err(SrtpFail::Replay)
        );
    }
}
