//! Table-driven conformance test over the shared RFC corpus
//! (`tests/corpus/manifest.tsv`, copied from the RFCs): RFC 4475 torture tests, RFC 5118
//! IPv6 tests, RFC 3665 call flows and RFC 3261 §24 examples.
//!
//! * valid messages parse, round-trip byte-exact (`as_bytes()` == file) and
//!   frame identically on a stream;
//! * invalid ones are refused with the status the manifest expects (or
//!   dropped silently for responses);
//! * semantic ones are checked as far as a parser reaches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use sipedge::sip::{
    build_error_response, Frame, FramingError, HeaderName, Message, Method, ParseErrorKind, Scheme,
    StreamFramer,
};

use common::corpus_dir;

struct Row {
    path: String,
    class: String,
    bytes: Vec<u8>,
}

fn rows() -> Vec<Row> {
    let dir = corpus_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest");
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let path = cols[0].to_string();
            let bytes = std::fs::read(dir.join(&path)).expect("corpus file");
            Row {
                path,
                class: cols[5].to_string(),
                bytes,
            }
        })
        .filter(|r| {
            r.path.starts_with("rfc4475/")
                || r.path.starts_with("rfc5118/")
                || r.path.starts_with("rfc3665/")
                || r.path.starts_with("rfc3261/")
        })
        .collect()
}

fn stem(path: &str) -> &str {
    let f = path.rsplit('/').next().unwrap_or(path);
    f.strip_suffix(".dat").unwrap_or(f)
}

/// Expected outcome of a datagram parse.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Parses; `as_bytes()` equals the file.
    Accept,
    /// Refused; `response()` gives this status.
    Reject(u16),
    /// Refused silently (`response()` is None).
    Drop,
}

fn expectation(row: &Row) -> Want {
    let s = stem(&row.path);
    if row.path.starts_with("rfc5118/archive/") {
        // Bare-LF archive files are not wire format (CRLF is required).
        return Want::Reject(400);
    }
    match s {
        // RFC 4475 §3.1.2
        "badinv01"
        | "clerr"
        | "ncl"
        | "scalar02"
        | "quotbal"
        | "ltgtruri"
        | "lwsruri"
        | "lwsstart"
        | "trws"
        | "escruri"
        | "regbadct"
        | "badaspec"
        | "baddn"
        | "baddn-with-final-crlf"
        | "mismatch01" => Want::Reject(400),
        // No SIP-Version and no Via: nothing to answer along (manifest: 400 or drop).
        "test" => Want::Drop,
        "badvers" => Want::Reject(505),
        "mismatch02" => Want::Reject(501),
        "scalarlg" | "bigcode" => Want::Drop,
        // RFC 4475 §3.3 with a 400 / framing error
        "insuf" | "multi01" | "mcl01" => Want::Reject(400),
        // RFC 5118 §4.2
        "ipv6-bad" => Want::Reject(400),
        _ => Want::Accept,
    }
}

/// RFC 3261 §24.2 files whose SDP the RFC does not print.
fn missing_body(row: &Row) -> Option<usize> {
    let s = stem(&row.path);
    if !row.path.starts_with("rfc3261/") {
        return None;
    }
    match s {
        "24.2-F01" | "24.2-F03" | "24.2-F05" => Some(142),
        "24.2-F09" | "24.2-F10" | "24.2-F11" => Some(131),
        _ => None,
    }
}

fn parse(b: &[u8]) -> Result<Message, sipedge::sip::ParseError> {
    Message::parse(Bytes::copy_from_slice(b))
}

#[test]
fn manifest_is_covered() {
    let rows = rows();
    let by_class: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.class.as_str()).or_default() += 1;
        m
    });
    assert!(rows.len() >= 260, "only {} rows", rows.len());
    assert_eq!(by_class.get("semantic"), Some(&17));
    assert!(by_class.get("flow").copied().unwrap_or(0) >= 197);
}

#[test]
fn datagram_parse_matches_manifest() {
    let mut failures = Vec::new();
    let mut accepted = 0;
    for row in rows() {
        let mut data = row.bytes.clone();
        if let Some(n) = missing_body(&row) {
            data.extend(std::iter::repeat_n(b'x', n));
        }
        let want = expectation(&row);
        let got = parse(&data);
        let ok = match (&got, want) {
            (Ok(m), Want::Accept) => {
                accepted += 1;
                if stem(&row.path) == "dblreq" {
                    // Trailing octets after Content-Length are ignored.
                    data.starts_with(m.as_bytes()) && m.as_bytes().len() < data.len()
                } else {
                    m.as_bytes().as_ref() == data.as_slice()
                        && m.edit().finish().as_ref() == data.as_slice()
                }
            }
            (Err(e), Want::Reject(code)) => {
                // The answer can be built from the raw bytes (it echoes the
                // request's own, possibly broken, Via/From/To/Call-ID/CSeq).
                let answered = e.response().and_then(|(c, r)| {
                    build_error_response(&data, c, r, Some(b"edge")).map(|b| (c, b))
                });
                match answered {
                    Some((c, b)) => {
                        c == code
                            && b.starts_with(format!("SIP/2.0 {code} ").as_bytes())
                            && b.ends_with(b"\r\nContent-Length: 0\r\n\r\n")
                    }
                    None => false,
                }
            }
            (Err(e), Want::Drop) => e.response().is_none(),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got {:?}",
                row.path,
                want,
                got.as_ref()
                    .map(|_| "Ok")
                    .map_err(|e| (e.kind(), e.response()))
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(accepted > 200, "accepted {accepted}");
}

#[test]
fn valid_messages_frame_identically_on_streams() {
    for row in rows() {
        if expectation(&row) != Want::Accept || missing_body(&row).is_some() {
            continue;
        }
        let mut f = StreamFramer::default();
        f.push(&row.bytes);
        let dgram = parse(&row.bytes).expect("accepted above");
        match f.next_frame() {
            Ok(Some(Frame::Message(m))) => {
                assert_eq!(m.as_bytes(), dgram.as_bytes(), "{}", row.path)
            }
            Err(FramingError::MissingContentLength) => {
                // Only legal on datagrams (inv2543, RFC 3665 3.8-F19).
                assert_eq!(dgram.content_length(), None, "{}", row.path);
            }
            other => panic!("{}: {other:?}", row.path),
        }
    }
}

fn file(path: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(path)).expect(path)
}

fn ok(path: &str) -> Message {
    parse(&file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn err_kind(path: &str) -> ParseErrorKind {
    parse(&file(path)).expect_err(path).kind()
}

#[test]
fn rfc4475_specific_refusals() {
    assert_eq!(
        err_kind("rfc4475/invalid/ncl.dat"),
        ParseErrorKind::BadContentLength
    );
    assert_eq!(
        err_kind("rfc4475/semantic/mcl01.dat"),
        ParseErrorKind::MultipleContentLength
    );
    assert_eq!(
        err_kind("rfc4475/invalid/clerr.dat"),
        ParseErrorKind::BodyTruncated
    );
    assert_eq!(
        err_kind("rfc4475/invalid/scalar02.dat"),
        ParseErrorKind::BadCSeq
    );
    assert_eq!(
        err_kind("rfc4475/invalid/quotbal.dat"),
        ParseErrorKind::UnbalancedQuotes
    );
    assert_eq!(
        err_kind("rfc4475/other/baddn-with-final-crlf.dat"),
        ParseErrorKind::BadDisplayName
    );
    assert_eq!(
        err_kind("rfc4475/invalid/baddn.dat"),
        ParseErrorKind::Incomplete
    );
    assert_eq!(
        err_kind("rfc4475/invalid/badvers.dat"),
        ParseErrorKind::VersionNotSupported
    );
    assert_eq!(
        err_kind("rfc4475/invalid/bigcode.dat"),
        ParseErrorKind::BadStatusCode
    );
    assert_eq!(
        err_kind("rfc4475/invalid/escruri.dat"),
        ParseErrorKind::RequestUriHeaders
    );
    assert_eq!(
        err_kind("rfc4475/invalid/mismatch01.dat"),
        ParseErrorKind::CSeqMismatch
    );
    assert_eq!(
        err_kind("rfc4475/invalid/mismatch02.dat"),
        ParseErrorKind::UnknownMethodMismatch
    );
    assert_eq!(
        err_kind("rfc4475/invalid/badinv01.dat"),
        ParseErrorKind::BadVia
    );
    assert_eq!(
        err_kind("rfc5118/ipv6-bad.dat"),
        ParseErrorKind::BadRequestUri
    );
    assert_eq!(
        err_kind("rfc5118/archive/ipv6-good"),
        ParseErrorKind::BadLineEnd
    );
    for f in [
        "rfc4475/invalid/bigcode.dat",
        "rfc4475/invalid/scalarlg.dat",
    ] {
        let e = parse(&file(f)).expect_err(f);
        assert!(
            !e.is_request() && e.response().is_none(),
            "{f}: never answer a response"
        );
    }
    let insuf = err_kind("rfc4475/semantic/insuf.dat");
    assert!(
        matches!(insuf, ParseErrorKind::MissingHeader(_)),
        "{insuf:?}"
    );
    assert!(matches!(
        err_kind("rfc4475/semantic/multi01.dat"),
        ParseErrorKind::DuplicateHeader(_)
    ));
}

#[test]
fn clerr_waits_on_a_stream() {
    let data = file("rfc4475/invalid/clerr.dat");
    let mut f = StreamFramer::default();
    f.push(&data);
    assert!(
        f.next_frame().unwrap().is_none(),
        "wait for the rest of the body"
    );
    let mut f = StreamFramer::default();
    f.push(&file("rfc4475/invalid/ncl.dat"));
    assert_eq!(f.next_frame().unwrap_err(), FramingError::BadContentLength);
    let mut f = StreamFramer::default();
    f.push(&file("rfc4475/semantic/mcl01.dat"));
    assert_eq!(f.next_frame().unwrap_err(), FramingError::BadContentLength);
}

#[test]
fn rfc4475_valid_semantics() {
    let m = ok("rfc4475/valid/wsinv.dat");
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().unwrap().seq, 9);
    assert_eq!(m.cseq().unwrap().method, Method::Invite);
    let vias: Vec<(String, String)> = m
        .vias()
        .map(|v| (v.transport().to_string(), v.host().to_string()))
        .collect();
    assert_eq!(
        vias,
        [
            ("UDP".into(), "192.0.2.2".into()),
            ("TCP".into(), "spindle.example.com".into()),
            ("UDP".into(), "192.168.255.111".into())
        ]
    );
    assert_eq!(
        m.vias().nth(2).unwrap().branch(),
        Some(&b"z9hG4bK30239"[..])
    );
    assert_eq!(m.to_hdr().unwrap().tag(), Some(&b"1918181833n"[..]));
    assert_eq!(m.from_hdr().unwrap().tag(), Some(&b"98asjd8"[..]));
    assert_eq!(
        m.header_by_name("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    assert_eq!(
        m.header_by_name("NewFangledHeader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
    assert_eq!(m.header_by_name("Subject"), Some(&b""[..]));
    assert_eq!(m.contact().unwrap().param("q"), Some(Some(&b"0.33"[..])));
    assert_eq!(m.routes().next().unwrap().uri().param("lr"), Some(None));
    assert_eq!(m.request_uri().unwrap().param("unknownparam"), Some(None));
    assert_eq!(m.body().len(), 150);

    let m = ok("rfc4475/valid/intmeth.dat");
    assert_eq!(
        m.method().unwrap().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert!(matches!(m.method(), Some(Method::Other(_))));
    assert_eq!(m.cseq().unwrap().method, *m.method().unwrap());
    assert_eq!(m.request_uri().unwrap().host(), b"example.com");
    assert_eq!(m.from_hdr().unwrap().tag(), Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(
        m.from_hdr().unwrap().display_name(),
        Some(&b"token1~` token2'+_ token3*%!.-"[..])
    );
    assert!(m.header_by_name("extensionHeader-!.%*+_`'~").is_some());

    let m = ok("rfc4475/valid/esc02.dat");
    assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(m.contacts().count(), 2, "C%6Fntact is another header");
    assert!(m.header_by_name("C%6Fntact").is_some());

    let m = ok("rfc4475/valid/esc01.dat");
    assert_eq!(
        m.request_uri().unwrap().user(),
        Some(&b"sips%3Auser%40example.com"[..])
    );
    assert_eq!(
        m.contact().unwrap().uri().param("n%61me"),
        Some(Some(&b"v%61lue%25%34%31"[..]))
    );

    let m = ok("rfc4475/valid/escnull.dat");
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.to_hdr().unwrap().uri().user(),
        Some(&b"null-%00-null"[..])
    );

    let m = ok("rfc4475/valid/lwsdisp.dat");
    assert_eq!(m.from_hdr().unwrap().display_name(), Some(&b"caller"[..]));

    let m = ok("rfc4475/valid/longreq.dat");
    assert_eq!(m.vias().count(), 34);
    assert_eq!(m.vias().last().unwrap().received(), Some(&b"192.0.2.5"[..]));
    assert_eq!(m.body().len(), 150);

    let m = ok("rfc4475/valid/dblreq.dat");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"");
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));

    let m = ok("rfc4475/valid/semiuri.dat");
    assert_eq!(
        m.request_uri().unwrap().user(),
        Some(&b"user;par=u%40example.net"[..])
    );
    assert_eq!(m.header_values(HeaderName::Accept).count(), 6);

    let m = ok("rfc4475/valid/transports.dat");
    let t: Vec<&str> = m.vias().map(|v| v.transport()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    let m = ok("rfc4475/valid/mpart01.dat");
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0));
    assert_eq!(m.top_via().unwrap().rport(), Some(None));

    let m = ok("rfc4475/valid/unreason.dat");
    assert_eq!(m.status(), Some(200));
    assert!(std::str::from_utf8(m.reason().unwrap())
        .unwrap()
        .starts_with("= 2**3 * 5**2 "));

    let m = ok("rfc4475/valid/noreason.dat");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(&b""[..]));
}

#[test]
fn rfc4475_semantic_cases() {
    let m = ok("rfc4475/semantic/zeromf.dat");
    assert_eq!(m.max_forwards(), Some(0));
    let m = ok("rfc4475/semantic/unkscm.dat");
    assert_eq!(m.request_uri().unwrap().scheme(), Scheme::Other);
    let m = ok("rfc4475/semantic/novelsc.dat");
    assert_eq!(m.request_uri().unwrap().scheme(), Scheme::Other);
    let m = ok("rfc4475/semantic/unksm2.dat");
    assert_eq!(m.to_hdr().unwrap().uri().scheme(), Scheme::Other);
    assert_eq!(m.contact().unwrap().uri().scheme_raw(), b"name");
    let m = ok("rfc4475/semantic/bext01.dat");
    let pr: Vec<&[u8]> = m.header_values(HeaderName::ProxyRequire).collect();
    assert_eq!(
        pr,
        vec![&b"noProxiesSupportThis"[..], b"norDoAnyProxiesSupportThis"]
    );
    assert_eq!(m.header_values(HeaderName::Require).count(), 2);
    let m = ok("rfc4475/semantic/badbranch.dat");
    assert_eq!(m.top_via().unwrap().branch(), Some(&b"z9hG4bK"[..]));
    let m = ok("rfc4475/semantic/cparam01.dat");
    let c = m.contact().unwrap();
    assert_eq!(c.param("unknownparam"), Some(None));
    assert_eq!(c.uri().param("unknownparam"), None);
    let m = ok("rfc4475/semantic/cparam02.dat");
    assert_eq!(m.contact().unwrap().uri().param("unknownparam"), Some(None));
    let m = ok("rfc4475/semantic/regescrt.dat");
    assert_eq!(
        m.contact().unwrap().uri().headers(),
        Some(&b"Route=%3Csip:sip.example.com%3E"[..])
    );
    let m = ok("rfc4475/semantic/bcast.dat");
    assert_eq!(m.vias().nth(1).unwrap().host(), "255.255.255.255");
    let m = ok("rfc4475/semantic/inv2543.dat");
    assert_eq!(m.max_forwards(), None);
    assert_eq!(m.content_length(), None);
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.from_hdr().unwrap().tag(), None);
    let m = ok("rfc4475/semantic/invut.dat");
    assert_eq!(
        m.header(HeaderName::ContentType),
        Some(&b"application/unknownformat"[..])
    );
    let m = ok("rfc4475/semantic/regaut01.dat");
    assert_eq!(
        m.header_by_name("authorization"),
        Some(&b"NoOneKnowsThisScheme opaque-data=here"[..])
    );
    assert!(ok("rfc4475/semantic/sdp01.dat").body().starts_with(b"v=0"));
    assert!(ok("rfc4475/invalid/baddate.dat")
        .header_by_name("Date")
        .is_some());
}

#[test]
fn rfc5118_ipv6() {
    let m = ok("rfc5118/port-ambiguous.dat");
    let u = m.request_uri().unwrap();
    assert_eq!(u.host(), b"[2001:db8::10:5070]");
    assert_eq!(u.port(), None);
    let m = ok("rfc5118/port-unambiguous.dat");
    let u = m.request_uri().unwrap();
    assert_eq!(u.host(), b"[2001:db8::10]");
    assert_eq!(u.port(), Some(5070));
    let m = ok("rfc5118/via-received-param-with-delim.dat");
    assert_eq!(
        m.top_via().unwrap().received(),
        Some(&b"[2001:db8::9:255]"[..])
    );
    let m = ok("rfc5118/via-received-param-no-delim.dat");
    assert_eq!(
        m.top_via().unwrap().received(),
        Some(&b"2001:db8::9:255"[..])
    );
    let m = ok("rfc5118/mult-ip-in-header.dat");
    let v: Vec<(&str, Option<u16>)> = m.vias().map(|v| (v.host(), v.port())).collect();
    assert_eq!(
        v,
        [
            ("[2001:db8::9:1]", Some(6050)),
            ("192.0.2.1", None),
            ("[2001:db8::9:255]", None)
        ]
    );
    let m = ok("rfc5118/ipv6-bug-abnf-3-colons.dat");
    assert_eq!(m.request_uri().unwrap().host(), b"[2001:db8:::192.0.2.1]");
    let m = ok("rfc5118/ipv4-mapped-ipv6.dat");
    assert_eq!(m.contact().unwrap().uri().host(), b"[::ffff:192.0.2.2]");
    assert_eq!(m.body().len(), 245);
}

#[test]
fn rfc3665_quirks() {
    for f in ["3.9-F06", "3.9-F08", "3.9-F10"] {
        let m = ok(&format!("rfc3665/{f}.dat"));
        assert_eq!(m.status(), Some(486));
        assert_eq!(m.reason(), Some(&b"Busy Here"[..]));
    }
    let m = ok("rfc3665/3.8-F19.dat");
    assert_eq!(m.status(), Some(487));
    assert_eq!(m.content_length(), None);
    let m = ok("rfc3665/2.5-F01.dat");
    assert_eq!(m.max_forwards(), None);
    assert!(m.top_via().unwrap().received().is_some());
}
