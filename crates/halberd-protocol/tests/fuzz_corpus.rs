//! Every seed of the fuzz corpora (`fuzz/corpus/<target>/`) runs through the
//! same property functions as the fuzz targets, so a crash the fuzzer once found
//! stays fixed once its input is added there.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn run(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 5, "too few seeds in {}", dir.display());
}

#[test]
fn sse_decoder_corpus() {
    run("sse_decoder", halberd_protocol::fuzzing::sse_decoder);
}

#[test]
fn decode_request_corpus() {
    run("decode_request", halberd_protocol::fuzzing::decode_request);
}
