//! Datagram parse of arbitrary bytes, every view and edit of a message.
//! The target is `sipedge_fuzz::parse_message` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::parse_message(data));
