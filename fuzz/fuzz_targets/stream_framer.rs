//! Stream framing of arbitrary bytes cut into arbitrary chunks.
//! The target is `sipedge_fuzz::stream_framer` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::stream_framer(data));
