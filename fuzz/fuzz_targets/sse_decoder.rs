#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| halberd_protocol::fuzzing::sse_decoder(data));
