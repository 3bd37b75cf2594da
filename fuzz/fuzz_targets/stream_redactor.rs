#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| halberd_guard::fuzzing::stream_redactor(data));
