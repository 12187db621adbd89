//! Datagram parse of arbitrary bytes; on success every view and edit is
//! exercised and the edited output re-parsed. Nothing may panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipedge::sip::{build_response, HeaderName, Message};

fuzz_target!(|data: &[u8]| {
    let m = match Message::parse(Bytes::copy_from_slice(data)) {
        Ok(m) => m,
        Err(e) => {
            let _ = (e.response(), e.kind(), e.is_request());
            return;
        }
    };
    assert!(data
        .windows(m.as_bytes().len())
        .any(|w| w == m.as_bytes().as_ref()));
    let _ = (m.method(), m.status(), m.reason(), m.call_id(), m.cseq());
    let _ = (m.max_forwards(), m.content_length(), m.body().len());
    if let Some(u) = m.request_uri() {
        let _ = (
            u.scheme(),
            u.user(),
            u.host(),
            u.port(),
            u.param("transport"),
        );
    }
    for v in m.vias() {
        let _ = (
            v.transport(),
            v.host(),
            v.port(),
            v.branch(),
            v.rport(),
            v.received(),
        );
    }
    for na in [m.from_hdr(), m.to_hdr(), m.contact()]
        .into_iter()
        .flatten()
    {
        let _ = (na.display_name(), na.uri().host(), na.tag());
    }
    let _ = (
        m.routes().count(),
        m.record_routes().count(),
        m.headers().count(),
    );
    let _ = m.header_values(HeaderName::Supported).count();
    let out = m
        .edit()
        .push_via(b"SIP/2.0/TLS edge.example.net;branch=z9hG4bKfuzz")
        .set_max_forwards(69)
        .add_record_route(b"<sip:edge.example.net;lr>")
        .pop_route()
        .set_via_received(b"192.0.2.1", Some(5060))
        .set_body(None, b"")
        .finish();
    let _ = Message::parse(out);
    if m.is_request() {
        let _ = Message::parse(build_response(&m, 400, "Bad Request", Some(b"x"), &[]));
    }
});
