//! Stream framing of arbitrary bytes cut into arbitrary chunks (the first
//! byte chooses the chunk size). Nothing may panic, and every framed
//! message must be a contiguous piece of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipedge::sip::{Frame, StreamFramer};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut f = StreamFramer::new(8192);
    for piece in rest.chunks(chunk) {
        f.push(piece);
        loop {
            match f.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    let b = m.as_bytes();
                    assert!(rest.windows(b.len()).any(|w| w == b.as_ref()));
                }
                Ok(Some(Frame::Keepalive)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.response();
                    return;
                }
            }
        }
    }
});
