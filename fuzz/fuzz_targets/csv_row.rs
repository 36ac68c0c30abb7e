#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowctl_fuzz::csv_row(data));
