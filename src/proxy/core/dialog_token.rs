//! Our Record-Route entries carry a token (`;sx=…`): an HMAC, under a secret of this appliance,
//! of the dialog's Call-ID, the caller's tag and the gateway-side peer of the call. Inside a
//! dialog, a Route set naming us is followed only when the token verifies: an in-dialog request
//! with an invented To tag, a Route copied into another call, or a request from another trunk
//! of the same site gets a 403, and nothing it names is resolved (no open relay, RFC 3261
//! §16.4 is applied only to dialogs we created). The cloud side is one peer, so only the
//! gateway side is bound by name.
//!
//! Stateless (the secret lives in the state directory, so dialogs survive a restart). Pure.

use aws_lc_rs::hmac;

/// The URI parameter holding the token.
pub const PARAM: &str = "sx";
/// HMAC bytes kept (96 bits: 16 base64url characters).
const TAG_LEN: usize = 12;

/// The key our Record-Route tokens are made with.
pub struct DialogKey(hmac::Key);

impl std::fmt::Debug for DialogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialogKey(..)")
    }
}

impl DialogKey {
    /// A key from secret bytes (at least 16).
    pub fn new(secret: &[u8]) -> DialogKey {
        DialogKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random key (tests, and an appliance without a state directory).
    pub fn random() -> DialogKey {
        let secret: [u8; 32] = rand::random();
        DialogKey::new(&secret)
    }

    /// The token of a dialog: Call-ID, the caller's From tag, the name of its gateway-side peer.
    pub fn token(&self, call_id: &[u8], caller_tag: &[u8], gateway: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        for field in [call_id, caller_tag, gateway.as_bytes()] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        let tag = ctx.sign();
        let bytes = tag.as_ref().get(..TAG_LEN).unwrap_or_default();
        data_encoding::BASE64URL_NOPAD.encode(bytes)
    }

    /// Does `token` belong to this dialog? The caller's tag is the From tag of requests from
    /// the caller and the To tag of requests from the callee: either may be given.
    pub fn verify(&self, token: &[u8], call_id: &[u8], tags: [&[u8]; 2], gateway: &str) -> bool {
        tags.iter().any(|tag| {
            let expected = self.token(call_id, tag, gateway);
            aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), token).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_call_tag_gateway_and_key() {
        let k = DialogKey::new(b"0123456789abcdef0123456789abcdef");
        let t = k.token(b"call-1", b"tagA", "gw1.lab.example");
        assert_eq!(t.len(), 16);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(t, k.token(b"call-1", b"tagA", "gw1.lab.example"));
        assert!(k.verify(
            t.as_bytes(),
            b"call-1",
            [b"tagB", b"tagA"],
            "gw1.lab.example"
        ));
        assert!(!k.verify(t.as_bytes(), b"call-2", [b"tagA", b"x"], "gw1.lab.example"));
        assert!(!k.verify(
            t.as_bytes(),
            b"call-1",
            [b"tagX", b"tagY"],
            "gw1.lab.example"
        ));
        assert!(!k.verify(t.as_bytes(), b"call-1", [b"tagA", b"x"], "gw2.lab.example"));
        assert!(!DialogKey::random().verify(
            t.as_bytes(),
            b"call-1",
            [b"tagA", b"x"],
            "gw1.lab.example"
        ));
        // Field boundaries cannot shift.
        assert_ne!(k.token(b"ab", b"c", "g"), k.token(b"a", b"bc", "g"));
    }
}
