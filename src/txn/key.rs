//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2) and branch
//! generation (§8.1.1.7, §16.6 step 8).
//!
//! The caller extracts the few header facts from a parsed message; this
//! module never parses SIP itself.

use bytes::Bytes;

/// The RFC 3261 magic cookie that starts every RFC 3261 branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// The method part of a transaction key.
///
/// `Other` carries a 64-bit FNV-1a hash of the method token (method names are
/// case-sensitive, RFC 3261 §7.1, so the bytes are hashed as they are): two
/// non-INVITE server transactions with the same branch but different CSeq
/// methods (e.g. a `BYE` and an `INFO`) get different keys while the enum
/// stays `Copy`. A collision between two extension methods would need the
/// same branch and sent-by as well, i.e. the same sender, so it cannot be
/// used to hijack someone else's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnMethod {
    /// `INVITE` (also the key method of an `ACK`, §17.2.3).
    Invite,
    /// `ACK` (only for client keys; server keys map ACK to `Invite`).
    Ack,
    /// `CANCEL` (its own transaction, §9.2).
    Cancel,
    /// Any other method: FNV-1a 64 of the method token.
    Other(u64),
}

impl TxnMethod {
    /// Classifies a method token (case-sensitive, RFC 3261 §7.1).
    pub fn from_bytes(method: &[u8]) -> TxnMethod {
        match method {
            b"INVITE" => TxnMethod::Invite,
            b"ACK" => TxnMethod::Ack,
            b"CANCEL" => TxnMethod::Cancel,
            other => TxnMethod::Other(fnv1a64(FNV_OFFSET, other)),
        }
    }

    /// Stable byte encoding used when hashing a key into a branch.
    fn encode(self, out: &mut Vec<u8>) {
        match self {
            TxnMethod::Invite => out.push(1),
            TxnMethod::Ack => out.push(2),
            TxnMethod::Cancel => out.push(3),
            TxnMethod::Other(h) => {
                out.push(4);
                out.extend_from_slice(&h.to_be_bytes());
            }
        }
    }
}

/// Key of a client transaction (§17.1.3): the branch of the response's top
/// Via plus its CSeq method. A CANCEL and the INVITE it cancels share the
/// branch and differ by method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The `branch` parameter of the top Via (the one this element inserted).
    pub branch: Bytes,
    /// The CSeq method.
    pub method: TxnMethod,
}

impl ClientKey {
    /// Builds the key from the branch and the CSeq method token.
    pub fn new(branch: &[u8], cseq_method: &[u8]) -> ClientKey {
        ClientKey {
            branch: Bytes::copy_from_slice(branch),
            method: TxnMethod::from_bytes(cseq_method),
        }
    }
}

/// The facts of a request needed to find its server transaction. All byte
/// slices are the header values as received (the caller may have trimmed
/// surrounding whitespace). `sent_by` is `host[:port]` of the top Via; it is
/// compared ASCII-case-insensitively (host names are case-insensitive).
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Request method token.
    pub method: &'a [u8],
    /// `branch` of the top Via, if present.
    pub branch: Option<&'a [u8]>,
    /// `sent-by` of the top Via.
    pub sent_by: &'a [u8],
    /// The Request-URI.
    pub request_uri: &'a [u8],
    /// The From tag.
    pub from_tag: Option<&'a [u8]>,
    /// The To tag.
    pub to_tag: Option<&'a [u8]>,
    /// The Call-ID.
    pub call_id: &'a [u8],
    /// The CSeq number.
    pub cseq: u32,
    /// The whole top Via header field value (RFC 2543 fallback only).
    pub top_via: &'a [u8],
}

/// Key of a server transaction (§17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// The top Via branch starts with `z9hG4bK`: branch + sent-by + method
    /// (ACK folded into INVITE).
    Rfc3261 {
        /// The branch as received (case-sensitive).
        branch: Bytes,
        /// sent-by, ASCII-lowercased.
        sent_by: Bytes,
        /// The method; `Invite` for an ACK.
        method: TxnMethod,
    },
    /// RFC 2543 fallback (§17.2.3 paragraphs 4 and following).
    Rfc2543 {
        /// The Request-URI as received.
        request_uri: Bytes,
        /// From tag (empty when absent).
        from_tag: Bytes,
        /// To tag (empty when absent).
        to_tag: Bytes,
        /// Call-ID.
        call_id: Bytes,
        /// CSeq number.
        cseq: u32,
        /// The method; `Invite` for an ACK.
        method: TxnMethod,
        /// The whole top Via value.
        top_via: Bytes,
    },
}

fn is_rfc3261_branch(branch: Option<&[u8]>) -> Option<&[u8]> {
    branch.filter(|b| b.starts_with(MAGIC_COOKIE))
}

fn lower(b: &[u8]) -> Bytes {
    Bytes::from(b.to_ascii_lowercase())
}

impl ServerKey {
    /// The key of the server transaction this request belongs to.
    ///
    /// An ACK's key equals its INVITE's key (method `Invite`) so that the ACK
    /// for a 3xx-6xx response finds the INVITE transaction (§17.2.3: "the
    /// method of the request matches the one that created the transaction,
    /// except for ACK"). A CANCEL gets its own key (method `Cancel`); use
    /// [`ServerKey::invite_for_cancel`] to find what it cancels.
    ///
    /// RFC 2543 fallback: the ACK's To tag is the tag of the response, which
    /// equals the INVITE's To tag only for a re-INVITE. For an ACK of an
    /// *initial* INVITE (no To tag) use [`ServerKey::for_ack_of_untagged_invite`]
    /// as the second lookup.
    pub fn for_request(f: &RequestFacts) -> ServerKey {
        let method = match TxnMethod::from_bytes(f.method) {
            TxnMethod::Ack => TxnMethod::Invite,
            m => m,
        };
        Self::with_method(f, method, f.to_tag)
    }

    /// For a CANCEL: the key of the INVITE transaction it cancels (§9.2):
    /// same branch and sent-by with method INVITE. With the RFC 2543
    /// fallback the CANCEL carries the INVITE's Request-URI, Call-ID, From,
    /// To (including tags, §9.1) and CSeq number, so the same fields are
    /// compared with method INVITE.
    pub fn invite_for_cancel(f: &RequestFacts) -> ServerKey {
        Self::with_method(f, TxnMethod::Invite, f.to_tag)
    }

    /// RFC 2543 fallback second lookup for an ACK whose INVITE had no To tag
    /// (§17.2.3: "the To tag of the ACK matches the To tag of the response
    /// sent by the server transaction"): the INVITE key with an empty To tag.
    /// The caller must then check the ACK's To tag against the tag it put in
    /// the final response. Returns `None` for non-ACK requests and for ACKs
    /// with an RFC 3261 branch (their key needs no tag).
    pub fn for_ack_of_untagged_invite(f: &RequestFacts) -> Option<ServerKey> {
        if TxnMethod::from_bytes(f.method) != TxnMethod::Ack
            || is_rfc3261_branch(f.branch).is_some()
        {
            return None;
        }
        Some(Self::with_method(f, TxnMethod::Invite, None))
    }

    fn with_method(f: &RequestFacts, method: TxnMethod, to_tag: Option<&[u8]>) -> ServerKey {
        match is_rfc3261_branch(f.branch) {
            Some(branch) => ServerKey::Rfc3261 {
                branch: Bytes::copy_from_slice(branch),
                sent_by: lower(f.sent_by),
                method,
            },
            None => ServerKey::Rfc2543 {
                request_uri: Bytes::copy_from_slice(f.request_uri),
                from_tag: Bytes::copy_from_slice(f.from_tag.unwrap_or_default()),
                to_tag: Bytes::copy_from_slice(to_tag.unwrap_or_default()),
                call_id: Bytes::copy_from_slice(f.call_id),
                cseq: f.cseq,
                method,
                top_via: Bytes::copy_from_slice(f.top_via),
            },
        }
    }

    /// The method of this key.
    pub fn method(&self) -> TxnMethod {
        match self {
            ServerKey::Rfc3261 { method, .. } | ServerKey::Rfc2543 { method, .. } => *method,
        }
    }

    /// A stable branch for the `index`-th target forwarded from the
    /// transaction with this key (§16.6 step 8): retransmissions of the
    /// incoming request map to the same key and hence the same branch.
    pub fn branch_for_target(&self, key: &BranchKey, index: u32) -> String {
        let mut seed = Vec::with_capacity(128);
        let mut field = |b: &[u8]| {
            // length-prefixed so that field boundaries cannot shift
            seed.extend_from_slice(&(b.len() as u64).to_be_bytes());
            seed.extend_from_slice(b);
        };
        match self {
            ServerKey::Rfc3261 {
                branch,
                sent_by,
                method,
            } => {
                field(b"3261");
                field(branch);
                field(sent_by);
                method.encode(&mut seed);
            }
            ServerKey::Rfc2543 {
                request_uri,
                from_tag,
                to_tag,
                call_id,
                cseq,
                method,
                top_via,
            } => {
                field(b"2543");
                field(request_uri);
                field(from_tag);
                field(to_tag);
                field(call_id);
                field(&cseq.to_be_bytes());
                field(top_via);
                method.encode(&mut seed);
            }
        }
        branch_for(key, &seed, index)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 (the key of extension methods: cheap, not a secret).
fn fnv1a64(basis: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The secret our branches are derived with (§16.6 step 8): HMAC-SHA256 under a key of this
/// process, so that nobody who sees an upstream branch can predict the branch we use
/// downstream (and forge a response to it from another address).
pub struct BranchKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BranchKey(..)")
    }
}

impl BranchKey {
    /// A key from secret bytes.
    pub fn new(secret: &[u8]) -> BranchKey {
        BranchKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            secret,
        ))
    }

    /// A fresh random key (one per process).
    pub fn random() -> BranchKey {
        let secret: [u8; 32] = rand::random();
        BranchKey::new(&secret)
    }
}

/// Generates an RFC 3261 branch: `z9hG4bK` followed by 32 lowercase hex digits, the first 128
/// bits of HMAC-SHA256(`key`, `seed` ‖ `index`). Stable for one key and seed (retransmissions
/// of a request map to the same branch), unpredictable without the key; uniqueness across
/// space and time (§8.1.1.7) comes from the seed, which must contain the incoming
/// transaction's key.
pub fn branch_for(key: &BranchKey, seed: &[u8], index: u32) -> String {
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key.0);
    ctx.update(seed);
    ctx.update(&index.to_be_bytes());
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 32);
    out.push_str(MAGIC_COOKIE_STR);
    for b in tag.as_ref().iter().take(16) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const MAGIC_COOKIE_STR: &str = "z9hG4bK";
const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(method: &'a [u8], branch: Option<&'a [u8]>) -> RequestFacts<'a> {
        RequestFacts {
            method,
            branch,
            sent_by: b"gw1.example.com:5061",
            request_uri: b"sip:+15551234@sbc.example.com",
            from_tag: Some(b"ft1"),
            to_tag: None,
            call_id: b"cid-1@gw1",
            cseq: 7,
            top_via: b"SIP/2.0/TLS gw1.example.com:5061",
        }
    }

    const BR: &[u8] = b"z9hG4bK776asdhds";

    #[test]
    fn branch_for_is_stable_per_key_and_prefixed() {
        let k = BranchKey::new(b"0123456789abcdef0123456789abcdef");
        let a = branch_for(&k, b"seed", 0);
        assert_eq!(a, branch_for(&k, b"seed", 0));
        assert!(a.starts_with("z9hG4bK"));
        assert_eq!(a.len(), 7 + 32);
        assert!(a[7..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // Another process (another key) derives another branch from the same seed: nobody can
        // predict our downstream branch from the upstream one.
        assert_ne!(a, branch_for(&BranchKey::random(), b"seed", 0));
        // HMAC-SHA256 test vector (RFC 4231 case 2), first 128 bits: "what do ya want for
        // nothing?" under "Jefe"; the index is appended as 4 big-endian bytes, so split it off.
        let jefe = BranchKey::new(b"Jefe");
        let msg = b"what do ya want for nothing?";
        let (seed, idx) = msg.split_at(msg.len() - 4);
        let idx = u32::from_be_bytes([idx[0], idx[1], idx[2], idx[3]]);
        assert_eq!(
            branch_for(&jefe, seed, idx),
            "z9hG4bK5bdcc146bf60754e6a042426089575c7"
        );
    }

    #[test]
    fn fnv1a64_reference_vectors() {
        // published FNV-1a 64 test vectors
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn branch_for_distinct_per_index_and_seed() {
        let k = BranchKey::random();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            assert!(seen.insert(branch_for(&k, b"seed", i)));
        }
        assert!(seen.insert(branch_for(&k, b"seed2", 0)));
        assert!(seen.insert(branch_for(&k, b"", 0)));
        assert_ne!(branch_for(&k, b"ab", 1), branch_for(&k, b"a", 1));
    }

    #[test]
    fn method_classification() {
        assert_eq!(TxnMethod::from_bytes(b"INVITE"), TxnMethod::Invite);
        assert_eq!(TxnMethod::from_bytes(b"ACK"), TxnMethod::Ack);
        assert_eq!(TxnMethod::from_bytes(b"CANCEL"), TxnMethod::Cancel);
        // case-sensitive (§7.1): "invite" is an extension method
        assert!(matches!(
            TxnMethod::from_bytes(b"invite"),
            TxnMethod::Other(_)
        ));
        assert_ne!(
            TxnMethod::from_bytes(b"BYE"),
            TxnMethod::from_bytes(b"INFO")
        );
        assert_eq!(TxnMethod::from_bytes(b"BYE"), TxnMethod::from_bytes(b"BYE"));
    }

    #[test]
    fn client_key_distinguishes_cancel_from_invite() {
        let inv = ClientKey::new(BR, b"INVITE");
        let can = ClientKey::new(BR, b"CANCEL");
        assert_ne!(inv, can);
        assert_eq!(inv, ClientKey::new(BR, b"INVITE"));
        assert_ne!(inv, ClientKey::new(b"z9hG4bKother", b"INVITE"));
    }

    #[test]
    fn rfc3261_key_and_retransmission_match() {
        let k = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        assert!(matches!(k, ServerKey::Rfc3261 { .. }));
        assert_eq!(k.method(), TxnMethod::Invite);
        // a retransmission, even with a different Request-URI spelling and
        // Call-ID (irrelevant under RFC 3261 matching), matches
        let mut f = facts(b"INVITE", Some(BR));
        f.request_uri = b"sip:other@x";
        assert_eq!(ServerKey::for_request(&f), k);
        // sent-by host is case-insensitive
        f.sent_by = b"GW1.Example.COM:5061";
        assert_eq!(ServerKey::for_request(&f), k);
    }

    #[test]
    fn ack_finds_its_invite_rfc3261() {
        let inv = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        let mut ack = facts(b"ACK", Some(BR));
        ack.to_tag = Some(b"resp-tag");
        assert_eq!(ServerKey::for_request(&ack), inv);
        assert_eq!(ServerKey::for_ack_of_untagged_invite(&ack), None);
    }

    #[test]
    fn cancel_has_own_key_and_finds_its_invite() {
        let inv = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        let cancel = facts(b"CANCEL", Some(BR));
        let own = ServerKey::for_request(&cancel);
        assert_ne!(own, inv);
        assert_eq!(own.method(), TxnMethod::Cancel);
        assert_eq!(ServerKey::invite_for_cancel(&cancel), inv);
        // 2543 fallback too
        let inv2 = ServerKey::for_request(&facts(b"INVITE", Some(b"oldbranch")));
        let cancel2 = facts(b"CANCEL", Some(b"oldbranch"));
        assert_ne!(ServerKey::for_request(&cancel2), inv2);
        assert_eq!(ServerKey::invite_for_cancel(&cancel2), inv2);
    }

    #[test]
    fn different_sent_by_is_a_different_txn() {
        let a = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        let mut f = facts(b"INVITE", Some(BR));
        f.sent_by = b"gw2.example.com:5061";
        assert_ne!(ServerKey::for_request(&f), a);
        f.sent_by = b"gw1.example.com:5062";
        assert_ne!(ServerKey::for_request(&f), a);
    }

    #[test]
    fn different_methods_same_branch_are_different_txns() {
        let bye = ServerKey::for_request(&facts(b"BYE", Some(BR)));
        let info = ServerKey::for_request(&facts(b"INFO", Some(BR)));
        assert_ne!(bye, info);
    }

    #[test]
    fn rfc2543_fallback_without_cookie() {
        for branch in [None, Some(&b"1234"[..]), Some(&b"z9hG4b"[..])] {
            let k = ServerKey::for_request(&facts(b"INVITE", branch));
            assert!(matches!(k, ServerKey::Rfc2543 { .. }), "{branch:?}");
        }
        let k = ServerKey::for_request(&facts(b"INVITE", None));
        // same fields: same txn
        assert_eq!(ServerKey::for_request(&facts(b"INVITE", None)), k);
        // each field matters
        let mut f = facts(b"INVITE", None);
        f.cseq = 8;
        assert_ne!(ServerKey::for_request(&f), k);
        let mut f = facts(b"INVITE", None);
        f.call_id = b"other";
        assert_ne!(ServerKey::for_request(&f), k);
        let mut f = facts(b"INVITE", None);
        f.from_tag = Some(b"ft2");
        assert_ne!(ServerKey::for_request(&f), k);
        let mut f = facts(b"INVITE", None);
        f.request_uri = b"sip:x@y";
        assert_ne!(ServerKey::for_request(&f), k);
        let mut f = facts(b"INVITE", None);
        f.top_via = b"SIP/2.0/UDP 10.0.0.1";
        assert_ne!(ServerKey::for_request(&f), k);
        let mut f = facts(b"INVITE", None);
        f.to_tag = Some(b"tt");
        assert_ne!(ServerKey::for_request(&f), k);
    }

    #[test]
    fn rfc2543_ack_matching() {
        // initial INVITE without To tag; the ACK carries the response's tag
        let inv = ServerKey::for_request(&facts(b"INVITE", None));
        let mut ack = facts(b"ACK", None);
        ack.to_tag = Some(b"srv-tag");
        assert_ne!(ServerKey::for_request(&ack), inv);
        assert_eq!(ServerKey::for_ack_of_untagged_invite(&ack), Some(inv));
        // re-INVITE: INVITE and ACK carry the same To tag, direct match
        let mut reinv = facts(b"INVITE", None);
        reinv.to_tag = Some(b"dlg-tag");
        let mut ack2 = facts(b"ACK", None);
        ack2.to_tag = Some(b"dlg-tag");
        assert_eq!(
            ServerKey::for_request(&ack2),
            ServerKey::for_request(&reinv)
        );
        // not an ACK: no second lookup
        assert_eq!(
            ServerKey::for_ack_of_untagged_invite(&facts(b"INVITE", None)),
            None
        );
    }

    #[test]
    fn branch_for_target_stable_per_key() {
        let bk = BranchKey::random();
        let k = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        let again = ServerKey::for_request(&facts(b"INVITE", Some(BR)));
        assert_eq!(k.branch_for_target(&bk, 0), again.branch_for_target(&bk, 0));
        assert_ne!(k.branch_for_target(&bk, 0), k.branch_for_target(&bk, 1));
        let mut f = facts(b"INVITE", Some(BR));
        f.sent_by = b"gw2.example.com";
        assert_ne!(
            ServerKey::for_request(&f).branch_for_target(&bk, 0),
            k.branch_for_target(&bk, 0)
        );
        let k2543 = ServerKey::for_request(&facts(b"INVITE", None));
        assert!(k2543.branch_for_target(&bk, 0).starts_with("z9hG4bK"));
        assert_ne!(k2543.branch_for_target(&bk, 0), k.branch_for_target(&bk, 0));
    }
}
