#![no_main]
//! Prompt-injection layers on arbitrary bytes; the properties are in
//! `halberd_guard::fuzzing::injection`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    halberd_guard::fuzzing::injection(data);
});
