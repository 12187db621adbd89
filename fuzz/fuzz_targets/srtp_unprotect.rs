//! SRTP/SRTCP packets, forged and mutated, into the relay's unprotect.
//! The target is `sipedge_fuzz::srtp_unprotect` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::srtp_unprotect(data));
