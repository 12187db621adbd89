//! Allocation-free, in-place SRTP/SRTCP (RFC 3711) for the SDES suites
//! `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2).
//!
//! * Session keys: AES-CM PRF, key derivation rate 0, labels 0x00–0x05
//!   (RFC 3711 §4.3.1–§4.3.3).
//! * Encryption: AES-128 counter mode, IV = (k_s · 2^16) ⊕ (SSRC · 2^64) ⊕
//!   (i · 2^16) (§4.1.1); aws-lc-rs' CTR runs in place and increments the
//!   full 128-bit counter, which equals the RFC's 16-bit block counter
//!   because the IV's low 16 bits are zero and a packet is < 2^16 blocks.
//! * Authentication: HMAC-SHA1 over the authenticated portion || ROC for
//!   SRTP (§4.2, §3.1), truncated to 80 or 32 bits; over header ||
//!   encrypted payload || E-bit+SRTCP index for SRTCP, always 80 bits
//!   (§3.4, RFC 4568 §6.2.2).
//! * ROC tracking / index estimation (§3.3.1, Appendix A) and a 128-packet
//!   sliding replay window (§3.3.2) for SRTP and SRTCP, per SSRC.
//!
//! One [`SrtpTransform`] is one direction of one master key (like an
//! rtc-srtp `Context`): use one instance to protect and another to
//! unprotect. After the first packet of an SSRC, nothing allocates: the
//! SSRC table is a fixed array (least recently used entry evicted beyond
//! [`MAX_SSRCS`]), the keystream is written in place and the HMAC context
//! is copied from a precomputed key onto the stack.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroize;

use super::srtp::{SrtpSuite, KEY_SALT_LEN};
use super::MediaError;

/// AES-128 master/session key length.
const KEY_LEN: usize = 16;
/// Master/session salt length (112 bits, RFC 3711 §8.2).
const SALT_LEN: usize = 14;
/// HMAC-SHA1 session authentication key length (160 bits, §4.2.1).
const AUTH_KEY_LEN: usize = 20;
/// SRTCP tag length: 80 bits for both suites (RFC 4568 §6.2.2).
pub(crate) const SRTCP_TAG_LEN: usize = 10;
/// E-bit + 31-bit SRTCP index (§3.4).
const SRTCP_TRAILER_LEN: usize = 4;
/// Fixed RTCP header + sender SSRC, left in the clear (§3.4).
const RTCP_CLEAR_LEN: usize = 8;
/// Replay window size in packets (§3.3.2 requires at least 64).
const WINDOW: u64 = 128;
/// SSRCs tracked per direction before the least recently used is evicted.
pub const MAX_SSRCS: usize = 16;
/// Largest SRTCP index (31 bits).
const SRTCP_INDEX_MASK: u32 = 0x7fff_ffff;

// Key derivation labels (RFC 3711 §4.3.1, §4.3.2).
const LABEL_RTP_ENC: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENC: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The authentication tag did not verify.
    #[error("SRTP authentication failed")]
    Auth,
    /// The packet index was already seen or is behind the replay window.
    #[error("SRTP replayed packet")]
    Replay,
    /// Protect: this index was protected before (or is too old to tell), so its keystream
    /// would be used twice; or the SRTCP index space is spent.
    #[error("SRTP index already used")]
    IndexReuse,
    /// Too short, a header that does not fit, or no room for the tag.
    #[error("malformed SRTP packet or buffer too small")]
    Malformed,
}

/// Session keys of one of SRTP or SRTCP. aws-lc wipes its own key schedules when they are
/// freed; the salt is ours to wipe.
struct SessionKeys {
    cipher: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; SALT_LEN],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

/// Fills `out` with AES-CM keystream for `iv` under `key`.
fn keystream(key: &EncryptingKey, iv: [u8; 16], out: &mut [u8]) -> Result<(), SrtpError> {
    out.fill(0);
    xor_keystream(key, iv, out)
}

/// XORs AES-CM keystream for `iv` into `data`, in place.
fn xor_keystream(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    if data.is_empty() {
        return Ok(());
    }
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| SrtpError::Malformed)
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with kdr = 0: key_id = label || 0^48,
/// x = key_id ⊕ master_salt, IV = x · 2^16.
fn derive(
    master: &EncryptingKey,
    master_salt: &[u8; SALT_LEN],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(master_salt);
    // key_id is 56 bits, right-aligned under the 112-bit salt: the label
    // lands on byte 7 (r = index DIV kdr = 0 fills bytes 8..14).
    iv[7] ^= label;
    keystream(master, iv, out)
}

fn aes_ctr_key(key: &[u8]) -> Result<EncryptingKey, MediaError> {
    let k = UnboundCipherKey::new(&AES_128, key)
        .map_err(|_| MediaError::Srtp("bad AES key".to_owned()))?;
    EncryptingKey::ctr(k).map_err(|_| MediaError::Srtp("AES-CTR unavailable".to_owned()))
}

fn session_keys(
    master: &EncryptingKey,
    master_salt: &[u8; SALT_LEN],
    labels: [u8; 3],
) -> Result<SessionKeys, MediaError> {
    let fail = |_| MediaError::Srtp("SRTP key derivation failed".to_owned());
    let mut enc = [0u8; KEY_LEN];
    let mut auth = [0u8; AUTH_KEY_LEN];
    let mut salt = [0u8; SALT_LEN];
    derive(master, master_salt, labels[0], &mut enc).map_err(fail)?;
    derive(master, master_salt, labels[1], &mut auth).map_err(fail)?;
    derive(master, master_salt, labels[2], &mut salt).map_err(fail)?;
    let keys = aes_ctr_key(&enc).map(|cipher| SessionKeys {
        cipher,
        auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth),
        salt,
    });
    enc.zeroize();
    auth.zeroize();
    salt.zeroize();
    keys
}

/// The counter-mode IV of RFC 3711 §4.1.1.
fn cm_iv(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    // i · 2^16 with i < 2^48 fills bytes 8..14 (bytes 14, 15 stay zero).
    for (b, s) in iv[8..16].iter_mut().zip((index << 16).to_be_bytes()) {
        *b ^= s;
    }
    iv
}

/// A 128-packet sliding window over 48-bit SRTP or 31-bit SRTCP indices
/// (RFC 3711 §3.3.2). Bit `n` of `seen` stands for `highest - n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplayWindow {
    highest: u64,
    seen: u128,
}

impl ReplayWindow {
    /// A window that has seen nothing, anchored at `index`.
    fn fresh(index: u64) -> Self {
        ReplayWindow {
            highest: index,
            seen: 0,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let back = self.highest - index;
        if back >= WINDOW || self.seen & (1u128 << back) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let back = self.highest - index;
            if back < WINDOW {
                self.seen |= 1u128 << back;
            }
        }
    }

    /// RFC 3711 Appendix A: the index of `seq` given the highest index
    /// seen (s_l and ROC). A guess of ROC − 1 at ROC 0 stays at 0.
    fn estimate(&self, seq: u16) -> u64 {
        let roc = self.highest >> 16;
        let s_l = (self.highest & 0xffff) as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.saturating_sub(1)
            } else {
                roc
            }
        } else if seq < s_l - 0x8000 {
            (roc + 1) & 0xffff_ffff
        } else {
            roc
        };
        (v << 16) | u64::from(seq)
    }
}

/// Per-SSRC state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ssrc: u32,
    used: bool,
    last_use: u64,
    window: ReplayWindow,
    /// Next SRTCP index to send (protect side only).
    next_srtcp: u32,
    /// The last SRTCP index was sent: nothing more may be protected.
    srtcp_spent: bool,
}

const EMPTY: Slot = Slot {
    ssrc: 0,
    used: false,
    last_use: 0,
    window: ReplayWindow {
        highest: 0,
        seen: 0,
    },
    next_srtcp: 0,
    srtcp_spent: false,
};

/// A fixed-size table of SSRC states: no allocation, LRU eviction.
struct SsrcTable {
    slots: [Slot; MAX_SSRCS],
    tick: u64,
}

impl SsrcTable {
    fn new() -> Self {
        SsrcTable {
            slots: [EMPTY; MAX_SSRCS],
            tick: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<Slot> {
        self.slots
            .iter()
            .find(|s| s.used && s.ssrc == ssrc)
            .copied()
    }

    /// Stores `slot` over its SSRC's entry, a free one, or the least
    /// recently used.
    fn put(&mut self, mut slot: Slot) {
        self.tick = self.tick.wrapping_add(1);
        slot.used = true;
        slot.last_use = self.tick;
        let pos = self
            .slots
            .iter()
            .position(|s| s.used && s.ssrc == slot.ssrc)
            .or_else(|| self.slots.iter().position(|s| !s.used))
            .or_else(|| {
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_use)
                    .map(|(i, _)| i)
            });
        if let Some(s) = pos.and_then(|i| self.slots.get_mut(i)) {
            *s = slot;
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

/// Length of the RTP header including CSRCs and the header extension
/// (RFC 3550 §5.1, §5.3.1): everything SRTP leaves in the clear.
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    let b0 = *pkt.first().ok_or(SrtpError::Malformed)?;
    if b0 >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let words = be16(pkt, len + 2).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(words);
    }
    if len > pkt.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

/// HMAC-SHA1 of `a || b` under `key`.
fn hmac2(key: &hmac::Key, a: &[u8], b: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(a);
    ctx.update(b);
    ctx.sign()
}

/// One direction of SRTP + SRTCP under one master key||salt.
pub struct SrtpTransform {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_tag_len: usize,
    rtp_ssrcs: SsrcTable,
    rtcp_ssrcs: SsrcTable,
}

impl std::fmt::Debug for SrtpTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpTransform")
            .field("rtp_tag_len", &self.rtp_tag_len)
            .finish_non_exhaustive()
    }
}

impl SrtpTransform {
    /// Derives the session keys from a 30-byte master key||salt (SDES
    /// inline key, RFC 4568 §6.1).
    pub fn new(suite: SrtpSuite, key_salt: &[u8; KEY_SALT_LEN]) -> Result<Self, MediaError> {
        let (key, salt) = key_salt.split_at(KEY_LEN);
        let salt: &[u8; SALT_LEN] = salt
            .try_into()
            .map_err(|_| MediaError::Srtp("bad master salt".to_owned()))?;
        let master = aes_ctr_key(key)?;
        Ok(SrtpTransform {
            rtp: session_keys(
                &master,
                salt,
                [LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT],
            )?,
            rtcp: session_keys(
                &master,
                salt,
                [LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            )?,
            rtp_tag_len: suite.rtp_overhead(),
            rtp_ssrcs: SsrcTable::new(),
            rtcp_ssrcs: SsrcTable::new(),
        })
    }

    /// RTP → SRTP in place: `buf[..len]` is the RTP packet and `buf` has
    /// room for the tag. Returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.rtp_tag_len;
        let out_len = len.checked_add(tag_len).ok_or(SrtpError::Malformed)?;
        if buf.len() < out_len {
            return Err(SrtpError::Malformed);
        }
        let pkt = buf.get_mut(..len).ok_or(SrtpError::Malformed)?;
        let hdr = rtp_header_len(pkt)?;
        let seq = be16(pkt, 2).ok_or(SrtpError::Malformed)?;
        let ssrc = be32(pkt, 8).ok_or(SrtpError::Malformed)?;
        let mut slot = self.rtp_ssrcs.get(ssrc).unwrap_or(Slot {
            ssrc,
            window: ReplayWindow::fresh(u64::from(seq)),
            ..EMPTY
        });
        // The sender tracks its ROC the same way (§3.3.1): packets the
        // relay forwards may arrive reordered across a wrap.
        let index = slot.window.estimate(seq);
        // An index protected before would reuse its keystream (RFC 3711 §9.1: a two-time
        // pad): refuse it, as well as one too old for the window to tell.
        slot.window
            .check(index)
            .map_err(|_| SrtpError::IndexReuse)?;
        let roc = (index >> 16) as u32;
        let payload = pkt.get_mut(hdr..).ok_or(SrtpError::Malformed)?;
        xor_keystream(
            &self.rtp.cipher,
            cm_iv(&self.rtp.salt, ssrc, index),
            payload,
        )?;
        let tag = hmac2(&self.rtp.auth, pkt, &roc.to_be_bytes());
        let dst = buf.get_mut(len..out_len).ok_or(SrtpError::Malformed)?;
        dst.copy_from_slice(tag.as_ref().get(..tag_len).ok_or(SrtpError::Malformed)?);
        slot.window.accept(index);
        self.rtp_ssrcs.put(slot);
        Ok(out_len)
    }

    /// SRTP → RTP in place: authenticate (constant time), then the replay
    /// check, then decrypt. Returns the RTP length.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.rtp_tag_len;
        let pkt = buf.get_mut(..len).ok_or(SrtpError::Malformed)?;
        let auth_len = len.checked_sub(tag_len).ok_or(SrtpError::Malformed)?;
        let (body, tag) = pkt.split_at_mut(auth_len);
        let hdr = rtp_header_len(body)?;
        let seq = be16(body, 2).ok_or(SrtpError::Malformed)?;
        let ssrc = be32(body, 8).ok_or(SrtpError::Malformed)?;
        let mut slot = self.rtp_ssrcs.get(ssrc).unwrap_or(Slot {
            ssrc,
            window: ReplayWindow::fresh(u64::from(seq)),
            ..EMPTY
        });
        let index = slot.window.estimate(seq);
        let roc = (index >> 16) as u32;
        let want = hmac2(&self.rtp.auth, body, &roc.to_be_bytes());
        let want = want.as_ref().get(..tag_len).ok_or(SrtpError::Malformed)?;
        constant_time::verify_slices_are_equal(want, tag).map_err(|_| SrtpError::Auth)?;
        slot.window.check(index)?;
        let payload = body.get_mut(hdr..).ok_or(SrtpError::Malformed)?;
        xor_keystream(
            &self.rtp.cipher,
            cm_iv(&self.rtp.salt, ssrc, index),
            payload,
        )?;
        slot.window.accept(index);
        self.rtp_ssrcs.put(slot);
        Ok(auth_len)
    }

    /// RTCP → SRTCP in place (encrypted, E = 1): appends the index word
    /// and the 80-bit tag. Returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < RTCP_CLEAR_LEN {
            return Err(SrtpError::Malformed);
        }
        let trailer_end = len
            .checked_add(SRTCP_TRAILER_LEN)
            .ok_or(SrtpError::Malformed)?;
        let out_len = trailer_end
            .checked_add(SRTCP_TAG_LEN)
            .ok_or(SrtpError::Malformed)?;
        if buf.len() < out_len {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(buf, 4).ok_or(SrtpError::Malformed)?;
        let mut slot = self.rtcp_ssrcs.get(ssrc).unwrap_or(Slot { ssrc, ..EMPTY });
        if slot.srtcp_spent {
            return Err(SrtpError::IndexReuse);
        }
        let index = slot.next_srtcp;
        // The 31-bit index never wraps back to an index already used (§3.4: rekey first).
        slot.srtcp_spent = index == SRTCP_INDEX_MASK;
        slot.next_srtcp = index.wrapping_add(1) & SRTCP_INDEX_MASK;
        let payload = buf
            .get_mut(RTCP_CLEAR_LEN..len)
            .ok_or(SrtpError::Malformed)?;
        xor_keystream(
            &self.rtcp.cipher,
            cm_iv(&self.rtcp.salt, ssrc, u64::from(index)),
            payload,
        )?;
        let word = (0x8000_0000 | index).to_be_bytes();
        buf.get_mut(len..trailer_end)
            .ok_or(SrtpError::Malformed)?
            .copy_from_slice(&word);
        let authed = buf.get(..trailer_end).ok_or(SrtpError::Malformed)?;
        let tag = hmac2(&self.rtcp.auth, authed, &[]);
        buf.get_mut(trailer_end..out_len)
            .ok_or(SrtpError::Malformed)?
            .copy_from_slice(
                tag.as_ref()
                    .get(..SRTCP_TAG_LEN)
                    .ok_or(SrtpError::Malformed)?,
            );
        self.rtcp_ssrcs.put(slot);
        Ok(out_len)
    }

    /// SRTCP → RTCP in place: authenticate, replay check on the SRTCP
    /// index, decrypt when the E-bit is set. Returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let pkt = buf.get_mut(..len).ok_or(SrtpError::Malformed)?;
        let auth_len = len.checked_sub(SRTCP_TAG_LEN).ok_or(SrtpError::Malformed)?;
        let plain_len = auth_len
            .checked_sub(SRTCP_TRAILER_LEN)
            .filter(|&n| n >= RTCP_CLEAR_LEN)
            .ok_or(SrtpError::Malformed)?;
        let (body, tag) = pkt.split_at_mut(auth_len);
        let want = hmac2(&self.rtcp.auth, body, &[]);
        let want = want
            .as_ref()
            .get(..SRTCP_TAG_LEN)
            .ok_or(SrtpError::Malformed)?;
        constant_time::verify_slices_are_equal(want, tag).map_err(|_| SrtpError::Auth)?;
        let word = be32(body, plain_len).ok_or(SrtpError::Malformed)?;
        let encrypted = word & 0x8000_0000 != 0;
        let index = u64::from(word & SRTCP_INDEX_MASK);
        let ssrc = be32(body, 4).ok_or(SrtpError::Malformed)?;
        let mut slot = self.rtcp_ssrcs.get(ssrc).unwrap_or(Slot {
            ssrc,
            window: ReplayWindow::fresh(index),
            ..EMPTY
        });
        slot.window.check(index)?;
        if encrypted {
            let payload = body
                .get_mut(RTCP_CLEAR_LEN..plain_len)
                .ok_or(SrtpError::Malformed)?;
            xor_keystream(
                &self.rtcp.cipher,
                cm_iv(&self.rtcp.salt, ssrc, index),
                payload,
            )?;
        }
        slot.window.accept(index);
        self.rtcp_ssrcs.put(slot);
        Ok(plain_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_srtp::context::Context;
    use rtc_srtp::crypto::providers::AwsLcRsCrypto;
    use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
    use rtc_srtp::protection_profile::ProtectionProfile;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    const SUITES: [SrtpSuite; 2] = [SrtpSuite::Aes128CmSha1_80, SrtpSuite::Aes128CmSha1_32];

    fn key_salt(seed: u8) -> [u8; KEY_SALT_LEN] {
        let mut k = [0u8; KEY_SALT_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
        }
        k
    }

    fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 1, 0x40];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    /// An RTCP sender report (28 bytes) with some payload to encrypt.
    fn rtcp_sr(ssrc: u32, n: u8) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..20).map(|i| i ^ n));
        p
    }

    // RFC 3711 Appendix B.2.
    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        let key = aes_ctr_key(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).expect("key");
        let salt: [u8; SALT_LEN] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
            .try_into()
            .expect("salt");
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut ks = vec![0u8; 0xFF02 * 16];
        keystream(&key, iv, &mut ks).expect("keystream");
        assert_eq!(
            ks[..48].to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4
                 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
        assert_eq!(
            ks[0xFEFF * 16..].to_vec(),
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4
                 362B7C3C6773516318A077D7FC5073AE
                 6A2CC3787889374FBEB4C81B17BA6C44")
        );
    }

    // RFC 3711 Appendix B.3.
    #[test]
    fn key_derivation_matches_rfc3711_b3() {
        let master = aes_ctr_key(&hex("E1F97A0D3E018BE0D64FA32C06DE4139")).expect("key");
        let salt: [u8; SALT_LEN] = hex("0EC675AD498AFEEBB6960B3AABE6")
            .try_into()
            .expect("salt");
        let mut enc = [0u8; KEY_LEN];
        derive(&master, &salt, LABEL_RTP_ENC, &mut enc).expect("enc");
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0u8; SALT_LEN];
        derive(&master, &salt, LABEL_RTP_SALT, &mut s).expect("salt");
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // The RFC lists 94 bytes of auth key; HMAC-SHA1 uses the first 20.
        let mut a = [0u8; 94];
        derive(&master, &salt, LABEL_RTP_AUTH, &mut a).expect("auth");
        assert_eq!(
            a.to_vec(),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    #[test]
    fn index_estimation_follows_appendix_a() {
        let w = ReplayWindow::fresh(0xFFFE); // ROC 0, s_l 65534
        assert_eq!(w.estimate(1), 0x1_0001, "wrapped forward");
        assert_eq!(w.estimate(65530), 65530);
        let w = ReplayWindow::fresh(0x1_0002); // ROC 1, s_l 2
        assert_eq!(w.estimate(65533), 65533, "late packet from ROC 0");
        assert_eq!(w.estimate(3), 0x1_0003);
        let w = ReplayWindow::fresh(5); // ROC 0 never goes negative
        assert_eq!(w.estimate(65000), 65000);
    }

    #[test]
    fn replay_window_slides_over_128() {
        let mut w = ReplayWindow::fresh(1000);
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replay));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(SrtpError::Replay));
        assert_eq!(w.check(1000 - 127), Ok(()));
        assert_eq!(w.check(1000 - 128), Err(SrtpError::Replay), "too old");
        w.accept(1200);
        assert_eq!(w.check(1100), Ok(()));
        assert_eq!(w.check(1000), Err(SrtpError::Replay));
    }

    /// An rtc-srtp context (the independent implementation, a
    /// dev-dependency) keyed like ours; `inbound` ones check replay.
    fn oracle(suite: SrtpSuite, k: &[u8; KEY_SALT_LEN], inbound: bool) -> Context {
        let profile = match suite {
            SrtpSuite::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpSuite::Aes128CmSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        };
        let (key, salt) = k.split_at(KEY_LEN);
        let window = WINDOW as usize;
        let (rtp_opt, rtcp_opt) = if inbound {
            (
                Some(srtp_replay_protection(window)),
                Some(srtcp_replay_protection(window)),
            )
        } else {
            (None, None)
        };
        Context::new(key, salt, profile, rtp_opt, rtcp_opt, &AwsLcRsCrypto).expect("rtc-srtp")
    }

    /// Sequence numbers across the ROC wrap, and the order they are
    /// delivered in (out of order within the window).
    fn seqs() -> (Vec<u16>, Vec<usize>) {
        let seqs: Vec<u16> = (0..40u32).map(|i| (65520 + i) as u16).collect();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        // Swap neighbours around the wrap and move one packet 5 back.
        order.swap(14, 16);
        order.swap(15, 17);
        let late = order.remove(20);
        order.insert(25, late);
        (seqs, order)
    }

    #[test]
    fn rtp_ours_protect_rtc_srtp_unprotect_across_rollover() {
        for suite in SUITES {
            let k = key_salt(1);
            let mut ours = SrtpTransform::new(suite, &k).expect("ours");
            let mut theirs = oracle(suite, &k, true);
            let (seqs, order) = seqs();
            let mut wire = Vec::new();
            for &s in &seqs {
                let p = rtp(s, 0x1234_5678, 160);
                let mut buf = p.clone();
                buf.resize(p.len() + 10, 0);
                let n = ours.protect_rtp(&mut buf, p.len()).expect("protect");
                assert_eq!(n, p.len() + suite.rtp_overhead());
                buf.truncate(n);
                wire.push((p, buf));
            }
            for &i in &order {
                let (plain, srtp) = &wire[i];
                let got = theirs.decrypt_rtp(srtp).expect("rtc-srtp decrypt");
                assert_eq!(&got[..], &plain[..], "{suite:?} seq {}", seqs[i]);
            }
        }
    }

    /// The relay forwards what it receives: our sender may itself see the
    /// sequence numbers reordered across the wrap and must estimate the
    /// ROC as a receiver would (RFC 3711 §3.3.1).
    #[test]
    fn rtp_ours_protect_reordered_across_rollover() {
        for suite in SUITES {
            let k = key_salt(10);
            let mut ours = SrtpTransform::new(suite, &k).expect("ours");
            let mut theirs = oracle(suite, &k, true);
            let (seqs, order) = seqs();
            for &i in &order {
                let p = rtp(seqs[i], 0x0BAD_F00D, 40);
                let mut buf = p.clone();
                buf.resize(p.len() + 10, 0);
                let n = ours.protect_rtp(&mut buf, p.len()).expect("protect");
                let got = theirs.decrypt_rtp(&buf[..n]).expect("rtc-srtp decrypt");
                assert_eq!(&got[..], &p[..], "{suite:?} seq {}", seqs[i]);
            }
        }
    }

    #[test]
    fn rtp_rtc_srtp_protect_ours_unprotect_across_rollover() {
        for suite in SUITES {
            let k = key_salt(2);
            let mut theirs = oracle(suite, &k, false);
            let mut ours = SrtpTransform::new(suite, &k).expect("ours");
            let (seqs, order) = seqs();
            let wire: Vec<(Vec<u8>, Vec<u8>)> = seqs
                .iter()
                .map(|&s| {
                    let p = rtp(s, 0xCAFE_0001, 160);
                    let e = theirs.encrypt_rtp(&p).expect("rtc-srtp encrypt").to_vec();
                    (p, e)
                })
                .collect();
            for &i in &order {
                let (plain, srtp) = &wire[i];
                let mut buf = srtp.clone();
                let n = ours.unprotect_rtp(&mut buf, srtp.len()).expect("unprotect");
                assert_eq!(&buf[..n], &plain[..], "{suite:?} seq {}", seqs[i]);
                // Delivered again: replay.
                let mut again = srtp.clone();
                assert_eq!(
                    ours.unprotect_rtp(&mut again, srtp.len()),
                    Err(SrtpError::Replay)
                );
            }
        }
    }

    #[test]
    fn rtp_with_csrc_and_extension_interoperates() {
        let k = key_salt(3);
        let mut ours = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &k).expect("ours");
        let mut theirs = oracle(SrtpSuite::Aes128CmSha1_80, &k, true);
        // CC = 1, X = 1, one-word extension.
        let mut p = vec![0x91, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0, 0, 0, 3]); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // extension
        p.extend_from_slice(b"payload bytes");
        let mut buf = p.clone();
        buf.resize(p.len() + 10, 0);
        let n = ours.protect_rtp(&mut buf, p.len()).expect("protect");
        assert_eq!(buf[..24], p[..24], "header left in the clear");
        assert_ne!(buf[24..p.len()], p[24..], "payload encrypted");
        let got = theirs.decrypt_rtp(&buf[..n]).expect("decrypt");
        assert_eq!(&got[..], &p[..]);
    }

    #[test]
    fn rtcp_interop_both_ways_both_suites() {
        for suite in SUITES {
            let k = key_salt(4);
            // Ours → theirs.
            let mut ours = SrtpTransform::new(suite, &k).expect("ours");
            let mut theirs_rx = oracle(suite, &k, true);
            for n in 0..5u8 {
                let p = rtcp_sr(0x0102_0304, n);
                let mut buf = p.clone();
                buf.resize(p.len() + 14, 0);
                let len = ours.protect_rtcp(&mut buf, p.len()).expect("protect");
                assert_eq!(len, p.len() + suite.rtcp_overhead());
                assert_ne!(buf[8..p.len()], p[8..], "payload encrypted");
                let got = theirs_rx.decrypt_rtcp(&buf[..len]).expect("decrypt");
                assert_eq!(&got[..], &p[..], "{suite:?} #{n}");
            }
            // Theirs → ours, delivered out of order, then replayed.
            let mut theirs_tx = oracle(suite, &k, false);
            let mut ours_rx = SrtpTransform::new(suite, &k).expect("ours rx");
            let wire: Vec<(Vec<u8>, Vec<u8>)> = (0..6u8)
                .map(|n| {
                    let p = rtcp_sr(0x0A0B_0C0D, n);
                    let e = theirs_tx.encrypt_rtcp(&p).expect("encrypt").to_vec();
                    (p, e)
                })
                .collect();
            for i in [0usize, 2, 1, 4, 3, 5] {
                let (plain, srtcp) = &wire[i];
                let mut buf = srtcp.clone();
                let n = ours_rx.unprotect_rtcp(&mut buf, srtcp.len()).expect("ours");
                assert_eq!(&buf[..n], &plain[..], "{suite:?} #{i}");
            }
            let mut again = wire[3].1.clone();
            let len = again.len();
            assert_eq!(
                ours_rx.unprotect_rtcp(&mut again, len),
                Err(SrtpError::Replay)
            );
        }
    }

    #[test]
    fn tampering_is_an_auth_error_and_leaves_no_state() {
        for suite in SUITES {
            let k = key_salt(5);
            let mut tx = SrtpTransform::new(suite, &k).expect("tx");
            let mut rx = SrtpTransform::new(suite, &k).expect("rx");
            let p = rtp(100, 9, 50);
            let mut buf = p.clone();
            buf.resize(p.len() + 10, 0);
            let n = tx.protect_rtp(&mut buf, p.len()).expect("protect");
            for at in [2, 13, n - 1] {
                let mut bad = buf.clone();
                bad[at] ^= 0x40;
                assert_eq!(rx.unprotect_rtp(&mut bad, n), Err(SrtpError::Auth), "{at}");
            }
            let mut good = buf.clone();
            assert_eq!(rx.unprotect_rtp(&mut good, n), Ok(p.len()));
            assert_eq!(&good[..p.len()], &p[..]);
            let mut again = buf.clone();
            assert_eq!(rx.unprotect_rtp(&mut again, n), Err(SrtpError::Replay));

            let c = rtcp_sr(9, 1);
            let mut cb = c.clone();
            cb.resize(c.len() + 14, 0);
            let m = tx.protect_rtcp(&mut cb, c.len()).expect("rtcp");
            let mut bad = cb.clone();
            bad[10] ^= 1;
            assert_eq!(rx.unprotect_rtcp(&mut bad, m), Err(SrtpError::Auth));
            let mut ok = cb.clone();
            assert_eq!(rx.unprotect_rtcp(&mut ok, m), Ok(c.len()));
            assert_eq!(rx.unprotect_rtcp(&mut cb, m), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn malformed_input_and_small_buffers() {
        let k = key_salt(6);
        let mut t = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &k).expect("t");
        let p = rtp(1, 1, 10);
        let mut exact = p.clone();
        // No room for the tag.
        assert_eq!(
            t.protect_rtp(&mut exact, p.len()),
            Err(SrtpError::Malformed)
        );
        // len beyond the buffer, or shorter than a header.
        let mut b = vec![0u8; 64];
        assert_eq!(t.protect_rtp(&mut b, 100), Err(SrtpError::Malformed));
        assert_eq!(t.unprotect_rtp(&mut b, 5), Err(SrtpError::Malformed));
        assert_eq!(t.unprotect_rtp(&mut b, 100), Err(SrtpError::Malformed));
        assert_eq!(t.unprotect_rtcp(&mut b, 21), Err(SrtpError::Malformed));
        assert_eq!(t.protect_rtcp(&mut b, 4), Err(SrtpError::Malformed));
        // Extension length pointing past the packet.
        let mut x = vec![
            0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0xff, 0xff,
        ];
        x.resize(40, 0);
        assert_eq!(t.protect_rtp(&mut x, 16), Err(SrtpError::Malformed));
        assert_eq!(t.unprotect_rtp(&mut x, 26), Err(SrtpError::Malformed));
        // Wrong RTP version.
        let mut v = rtp(1, 1, 10);
        v[0] = 0x40;
        v.resize(40, 0);
        assert_eq!(t.protect_rtp(&mut v, 22), Err(SrtpError::Malformed));
    }

    #[test]
    fn ssrc_table_evicts_least_recently_used() {
        let k = key_salt(7);
        let mut tx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &k).expect("tx");
        let mut rx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &k).expect("rx");
        let mut protect = |ssrc: u32, seq: u16| {
            let p = rtp(seq, ssrc, 20);
            let mut b = p.clone();
            b.resize(p.len() + 10, 0);
            let n = tx.protect_rtp(&mut b, p.len()).expect("protect");
            b.truncate(n);
            b
        };
        let first = protect(1, 10);
        let mut b = first.clone();
        assert!(rx.unprotect_rtp(&mut b, first.len()).is_ok());
        for ssrc in 2..=(MAX_SSRCS as u32 + 1) {
            let p = protect(ssrc, 1);
            let mut b = p.clone();
            assert!(rx.unprotect_rtp(&mut b, p.len()).is_ok(), "{ssrc}");
        }
        assert!(rx.rtp_ssrcs.get(1).is_none(), "oldest SSRC evicted");
        assert!(rx.rtp_ssrcs.get(MAX_SSRCS as u32 + 1).is_some());
    }

    proptest::proptest! {
        /// Arbitrary bytes and lengths never panic, whatever the call.
        #[test]
        fn arbitrary_input_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            len in 0usize..140,
            first in proptest::prelude::any::<u8>(),
        ) {
            let k = key_salt(9);
            let mut t = SrtpTransform::new(SrtpSuite::Aes128CmSha1_32, &k).expect("t");
            let mut d = data.clone();
            if let Some(b) = d.first_mut() {
                *b = first | 0x80; // mostly version 2, so parsing goes deeper
            }
            for op in 0..4 {
                let mut b = d.clone();
                let r = match op {
                    0 => t.protect_rtp(&mut b, len),
                    1 => t.unprotect_rtp(&mut b, len),
                    2 => t.protect_rtcp(&mut b, len),
                    _ => t.unprotect_rtcp(&mut b, len),
                };
                if let Ok(n) = r {
                    proptest::prop_assert!(n <= b.len());
                }
            }
        }
    }

    // A counting allocator (a test of "no allocation per packet") must implement the unsafe
    // allocator trait.
    #[allow(unsafe_code)]
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            pub static ALLOCS: Cell<u64> = const { Cell::new(0) };
        }

        pub struct Counting;

        fn bump() {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }

        // SAFETY: forwards to the system allocator, only counting (per
        // thread, so parallel tests do not disturb each other).
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                bump();
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc(l) }
            }
            unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
                bump();
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc_zeroed(l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
                bump();
                // SAFETY: same contract as the caller's.
                unsafe { System.realloc(p, l, n) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                // SAFETY: same contract as the caller's.
                unsafe { System.dealloc(p, l) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn count() -> u64 {
            ALLOCS.with(|c| c.get())
        }
    }

    #[test]
    fn no_allocation_per_packet_after_warm_up() {
        for suite in SUITES {
            let k = key_salt(8);
            let mut tx = SrtpTransform::new(suite, &k).expect("tx");
            let mut rx = SrtpTransform::new(suite, &k).expect("rx");
            let mut buf = [0u8; 256];
            let header = rtp(0, 0, 0);
            let mut run = |seq: u16| {
                buf[..12].copy_from_slice(&header[..12]);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let n = tx.protect_rtp(&mut buf, 172).expect("protect");
                assert_eq!(rx.unprotect_rtp(&mut buf, n), Ok(172));
                buf[..8].copy_from_slice(&[0x80, 200, 0, 6, 0, 0, 0, 5]);
                let m = tx.protect_rtcp(&mut buf, 28).expect("protect rtcp");
                assert_eq!(rx.unprotect_rtcp(&mut buf, m), Ok(28));
            };
            run(65530); // warm-up: the SSRC entries are created
            let before = alloc_count::count();
            for seq in 65531..=65535u16 {
                run(seq);
            }
            for seq in 0..1000u16 {
                run(seq);
            }
            assert_eq!(alloc_count::count() - before, 0, "{suite:?}");
        }
    }

    #[test]
    fn protect_refuses_an_index_twice() {
        let mut tx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &key_salt(9)).expect("ctx");
        let mut buf = [0u8; 256];
        let protect = |tx: &mut SrtpTransform, buf: &mut [u8; 256], seq: u16| {
            let p = rtp(seq, 0x1234, 40);
            buf[..p.len()].copy_from_slice(&p);
            tx.protect_rtp(buf, p.len())
        };
        assert!(protect(&mut tx, &mut buf, 100).is_ok());
        assert!(protect(&mut tx, &mut buf, 101).is_ok());
        // The same sequence number again: its keystream was used.
        assert_eq!(protect(&mut tx, &mut buf, 101), Err(SrtpError::IndexReuse));
        assert_eq!(protect(&mut tx, &mut buf, 100), Err(SrtpError::IndexReuse));
        // A late packet never protected (reordered before us) is fine, once.
        assert!(protect(&mut tx, &mut buf, 105).is_ok());
        assert!(protect(&mut tx, &mut buf, 103).is_ok());
        assert_eq!(protect(&mut tx, &mut buf, 103), Err(SrtpError::IndexReuse));
        // Behind the window nothing can be told: refused.
        assert!(protect(&mut tx, &mut buf, 400).is_ok());
        assert_eq!(protect(&mut tx, &mut buf, 102), Err(SrtpError::IndexReuse));
        // Other SSRCs have their own indices.
        let p = rtp(101, 0x9999, 40);
        buf[..p.len()].copy_from_slice(&p);
        assert!(tx.protect_rtp(&mut buf, p.len()).is_ok());
    }

    #[test]
    fn srtcp_index_space_is_never_reused() {
        let mut tx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &key_salt(3)).expect("ctx");
        let sr = rtcp_sr(0x55, 1);
        let mut buf = [0u8; 128];
        let mut slot = tx.rtcp_ssrcs.get(0x55).unwrap_or(Slot {
            ssrc: 0x55,
            ..EMPTY
        });
        slot.next_srtcp = SRTCP_INDEX_MASK;
        tx.rtcp_ssrcs.put(slot);
        buf[..sr.len()].copy_from_slice(&sr);
        assert!(
            tx.protect_rtcp(&mut buf, sr.len()).is_ok(),
            "the last index"
        );
        buf[..sr.len()].copy_from_slice(&sr);
        assert_eq!(
            tx.protect_rtcp(&mut buf, sr.len()),
            Err(SrtpError::IndexReuse),
            "index 0 again would reuse its keystream"
        );
    }
}
