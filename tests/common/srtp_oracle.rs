//! rtc-srtp contexts keyed like a relay leg: the independent SRTP
//! implementation the media tests and the relay bench check ours against
//! (a dev-dependency; the library does not link it).
//!
//! Include with `#[path = "common/srtp_oracle.rs"] mod srtp_oracle;`.

use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::AwsLcRsCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use sipedge::media::{SrtpSuite, KEY_SALT_LEN};

/// AES_CM_128 master key length; the salt is the rest of the key||salt.
const KEY_LEN: usize = 16;

/// Replay window in packets, as the relay's (RFC 3711 §3.3.2: at least 64).
const REPLAY_WINDOW: usize = 128;

/// Builds a one-direction rtc-srtp context from a 30-byte key||salt.
/// `inbound` contexts get replay protection.
pub fn new_context(
    suite: SrtpSuite,
    key_salt: &[u8; KEY_SALT_LEN],
    inbound: bool,
) -> Result<Context, String> {
    let profile = match suite {
        SrtpSuite::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::Aes128CmSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
    };
    let (key, salt) = key_salt.split_at(KEY_LEN);
    let (rtp_opt, rtcp_opt) = if inbound {
        (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
    } else {
        (None, None)
    };
    Context::new(key, salt, profile, rtp_opt, rtcp_opt, &AwsLcRsCrypto).map_err(|e| e.to_string())
}
