//! A sequence of SIP messages from peers and strangers into the proxy core.
//! The target is `sipedge_fuzz::core_sequence` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::core_sequence(data));
