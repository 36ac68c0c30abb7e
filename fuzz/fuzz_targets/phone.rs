#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowctl_fuzz::phone(data));
