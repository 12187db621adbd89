//! An SDP body through the anchor's parse, codec filter, offer/answer, address policy and rewrite.
//! The target is `sipedge_fuzz::sdp_rewrite` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::sdp_rewrite(data));
