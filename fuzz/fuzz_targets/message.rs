#![no_main]
//! cargo-fuzz target: see `lotledger_fuzz::message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotledger_fuzz::message(data));
