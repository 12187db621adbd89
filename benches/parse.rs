//! Parser benchmarks on a realistic gateway INVITE with SDP (~960 bytes).
//!
//! Run: `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipedge::sip::Message;
use std::hint::black_box;

const INVITE: &[u8] = b"INVITE sip:+14155550123@sbc.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-524287-1---3f2a9c1d7e6b5a40;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:edge.example.net:5061;transport=tls;lr>\r\n\
Contact: <sip:+12125550199@192.0.2.10:5061;transport=tls>\r\n\
To: <sip:+14155550123@sbc.example.net;user=phone>\r\n\
From: \"Main Office\" <sip:+12125550199@gw1.example.com;user=phone>;tag=8f3a2b1c\r\n\
Call-ID: 5f1c7b6a-93d2-4e1f-b0a8-2c4d6e8f0a1b@192.0.2.10\r\n\
CSeq: 102 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE\r\n\
Supported: 100rel, timer, replaces\r\n\
P-Asserted-Identity: \"Main Office\" <sip:+12125550199@gw1.example.com;user=phone>\r\n\
User-Agent: ExampleGateway/9.4.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 224\r\n\
\r\n\
v=0\r\n\
o=gw1 1696912345 1696912346 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
";

fn bench(c: &mut Criterion) {
    let buf = Bytes::from_static(INVITE);
    let m = Message::parse(buf.clone()).expect("bench message parses");
    assert_eq!(m.as_bytes().len(), INVITE.len());
    assert_eq!(m.body().len(), 224);

    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_only", |b| {
        b.iter(|| Message::parse(black_box(buf.clone())).expect("parses"))
    });
    g.bench_function("parse_and_access", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(buf.clone())).expect("parses");
            let branch = m.top_via().and_then(|v| v.branch()).map(<[u8]>::len);
            let call_id = m.call_id().map(<[u8]>::len);
            let cseq = m.cseq().map(|c| c.seq);
            let tag = m.from_hdr().and_then(|f| f.tag()).map(<[u8]>::len);
            let user = m.request_uri().and_then(|u| u.user()).map(<[u8]>::len);
            black_box((branch, call_id, cseq, tag, user))
        })
    });
    g.bench_function("parse_edit_finish", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(buf.clone())).expect("parses");
            let out = m
                .edit()
                .push_via(b"SIP/2.0/TLS 203.0.113.5:5061;branch=z9hG4bK-edge-1a2b3c4d")
                .set_max_forwards(69)
                .add_record_route(b"<sip:203.0.113.5:5061;transport=tls;lr>")
                .pop_route()
                .finish();
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
