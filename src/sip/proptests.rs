//! Property tests: arbitrary and mutated input never panics the parser, the
//! views, the editor or the framer; framing is independent of how the stream
//! is chunked.

use bytes::Bytes;
use proptest::prelude::*;

use super::{build_error_response, build_response, Frame, HeaderName, Message, StreamFramer};

const SAMPLES: &[&[u8]] = &[
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport, SIP/2.0/TCP [2001:db8::1]:5060;received=192.0.2.1\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, \"x, y\" <sip:p2.example.com;lr>\r\n\
Record-Route: <sip:rr.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>;expires=60\r\n\
X-Folded: a\r\n b\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\nx\x00\xff\r\n",
    b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nt: <sip:b@c>;tag=x\r\nf: <sip:a@c>;tag=y\r\ni: 1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
    b"REGISTER sip:[2001:db8::10] SIP/2.0\r\nVia: SIP/2.0/TLS h:5061;branch=z9hG4bKx\r\nTo: sip:u@h\r\nFrom: sip:u@h;tag=1\r\nCall-ID: r\r\nCSeq: 7 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
];

/// Calls every accessor and every edit on a parsed message.
fn touch(m: &Message) {
    let _ = (m.is_request(), m.method(), m.status(), m.reason());
    // Cached views equal a fresh parse of the same bytes.
    if let Some(u) = m.request_uri() {
        assert_eq!(Some(u), super::Uri::parse(u.raw()).ok());
    }
    assert_eq!(m.top_via(), m.vias().next());
    assert_eq!(
        m.from_hdr(),
        m.header(HeaderName::From)
            .and_then(|v| super::NameAddr::parse(v).ok())
    );
    assert_eq!(
        m.to_hdr(),
        m.header(HeaderName::To)
            .and_then(|v| super::NameAddr::parse(v).ok())
    );
    if let Some(u) = m.request_uri() {
        let _ = (
            u.scheme(),
            u.user(),
            u.host(),
            u.port(),
            u.param("lr"),
            u.headers(),
        );
    }
    for h in [
        HeaderName::Via,
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::Supported,
        HeaderName::Other,
    ] {
        let _ = m.header(h);
        let _ = m.header_values(h).count();
    }
    let _ = m.header_by_name("x-folded");
    let _ = m.headers().count();
    for v in m.vias() {
        let _ = (v.transport(), v.host(), v.port(), v.branch(), v.received());
        let _ = (v.rport(), v.maddr(), v.ttl(), v.param("x"));
    }
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length());
    for na in [m.from_hdr(), m.to_hdr(), m.contact()]
        .into_iter()
        .flatten()
    {
        let _ = (na.display_name(), na.uri().host(), na.tag(), na.param("q"));
    }
    let _ = (
        m.routes().count(),
        m.record_routes().count(),
        m.body().len(),
    );
    let out = m
        .edit()
        .push_via(b"SIP/2.0/UDP edge;branch=z9hG4bKp")
        .pop_via()
        .set_max_forwards(69)
        .add_record_route(b"<sip:edge;lr>")
        .pop_route()
        .set_request_uri(b"sip:x@y")
        .add_header("X-A", b"1")
        .remove_headers(HeaderName::Supported)
        .remove_headers_by_name("s")
        .set_via_received(b"[2001:db8::9]", Some(5060))
        .set_body(Some(b"text/plain"), b"hi")
        .finish();
    let _ = Message::parse(out);
    if m.is_request() {
        let _ = Message::parse(build_response(
            m,
            400,
            "Bad Request",
            Some(b"t"),
            &[("X", b"y")],
        ));
    }
}

fn check(data: &[u8]) {
    if let Ok(m) = Message::parse(Bytes::copy_from_slice(data)) {
        touch(&m);
    } else if let Err(e) = Message::parse(Bytes::copy_from_slice(data)) {
        let _ = (e.response(), e.to_string());
        if let Some((c, r)) = e.response() {
            if let Some(b) = build_error_response(data, c, r, Some(b"t")) {
                let _ = Message::parse(b);
            }
        }
    }
    let mut f = StreamFramer::new(4096);
    for chunk in data.chunks(7) {
        f.push(chunk);
        for _ in 0..4 {
            match f.next_frame() {
                Ok(Some(Frame::Message(m))) => touch(&m),
                Ok(Some(Frame::Keepalive)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        &b"\r\n"[..],
        b"\r\n ",
        b"\n",
        b"\r",
        b",",
        b";",
        b"\"",
        b"<",
        b">",
        b":",
        b"[",
        b"]",
        b"=",
        b"\x00",
        b"\xff\xfe",
        b"Content-Length: 99999999999999999999\r\n",
        b"l: 5\r\n",
        b"Via: SIP/2.0/UDP [::1\r\n",
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), special).prop_map(|(i, s)| Mutation::Insert(i, s.to_vec())),
        (any::<usize>(), 0usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = base.to_vec();
    for m in muts {
        let len = v.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if let Some(x) = v.get_mut(i % len) {
                    *x = *b;
                }
            }
            Mutation::Insert(i, s) => {
                let at = (i % (v.len() + 1)).min(v.len());
                v.splice(at..at, s.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(v.len());
                if at < end {
                    v.drain(at..end);
                }
            }
            Mutation::Truncate(i) => v.truncate(i % len),
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES raises it for a longer soak.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        check(&data);
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..SAMPLES.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let data = apply(SAMPLES[which], &muts);
        check(&data);
    }

    #[test]
    fn framing_is_chunking_independent(which in 0usize..SAMPLES.len(), cuts in prop::collection::vec(1usize..64, 1..40)) {
        let msg = SAMPLES[which];
        let mut f = StreamFramer::default();
        let mut rest = msg;
        let mut got = None;
        for c in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (a, b) = rest.split_at((*c).min(rest.len()));
            f.push(a);
            rest = b;
            if let Some(Frame::Message(m)) = f.next_frame().unwrap() {
                prop_assert!(rest.is_empty(), "framed before the end");
                got = Some(m);
            }
        }
        let m = got.expect("framed");
        prop_assert_eq!(m.as_bytes().as_ref(), msg);
    }
}

#[test]
fn samples_parse_and_round_trip() {
    for s in SAMPLES {
        let m = Message::parse(Bytes::from_static(s)).unwrap();
        assert_eq!(m.as_bytes().as_ref(), *s);
        touch(&m);
    }
}

#[test]
fn thousand_vias() {
    let mut r = b"OPTIONS sip:u@h SIP/2.0\r\n".to_vec();
    for i in 0..1000 {
        r.extend_from_slice(format!("Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n").as_bytes());
    }
    r.extend_from_slice(
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    let m = Message::parse(Bytes::from(r.clone())).unwrap();
    assert_eq!(m.vias().count(), 1000);
    assert_eq!(m.vias().last().unwrap().host(), "h999");
    touch(&m);
    // One line with 1000 comma-separated values.
    let mut r = b"OPTIONS sip:u@h SIP/2.0\r\nVia: ".to_vec();
    let vals: Vec<String> = (0..1000).map(|i| format!("SIP/2.0/UDP h{i}")).collect();
    r.extend_from_slice(vals.join(", ").as_bytes());
    r.extend_from_slice(
        b"\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    let m = Message::parse(Bytes::from(r)).unwrap();
    assert_eq!(m.vias().count(), 1000);
    let popped = Message::parse(m.edit().pop_via().finish()).unwrap();
    assert_eq!(popped.top_via().unwrap().host(), "h1");
}

#[test]
fn nul_invalid_utf8_and_huge_lengths() {
    let base = SAMPLES[0];
    for (from, to) in [
        (&b"Bob"[..], &b"B\x00b"[..]),
        (b"alice@", b"al\xffce@"),
        (b"INVITE sip", b"INV\xc3\x28TE sip"),
        (
            b"Content-Length: 10",
            b"Content-Length: 99999999999999999999999",
        ),
        (
            b"Content-Length: 10",
            b"Content-Length: 18446744073709551615",
        ),
        (b"Content-Length: 10", b"Content-Length: 4294967296"),
        (b"CSeq: 314159", b"CSeq: 99999999999999999999999"),
        (
            b"Max-Forwards: 70",
            b"Max-Forwards: 99999999999999999999999",
        ),
        (b"pc33.atlanta.com;", b"pc33.atlanta.com:99999999999999;"),
    ] {
        let s = String::from_utf8_lossy(base).into_owned();
        let mut v = base.to_vec();
        if let Some(p) = v.windows(from.len()).position(|w| w == from) {
            v.splice(p..p + from.len(), to.iter().copied());
        } else {
            panic!("pattern missing in sample: {s}");
        }
        check(&v);
    }
    check(&[0u8; 300]);
    check(&[0xffu8; 300]);
    let mut f = StreamFramer::default();
    f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert!(f.next_frame().is_err());
}
