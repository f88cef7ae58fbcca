#![no_main]
//! cargo-fuzz target: see `lotledger_fuzz::query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotledger_fuzz::query(data));
