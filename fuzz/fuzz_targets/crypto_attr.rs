//! An a=crypto value: parse, key checks, print and parse again.
//! The target is `sipedge_fuzz::crypto_attr` (fuzz/src/lib.rs); nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge_fuzz::crypto_attr(data));
