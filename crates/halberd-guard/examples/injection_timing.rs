//! Per-layer time of prompt-injection detection on a 4 KiB prompt, in
//! nanoseconds per byte, without a benchmark harness (quick checks while
//! tuning; the criterion bench `injection` is the reference).
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use halberd_guard::injection::{Detector, Trust, decode, model, normalize};

fn main() {
    let paragraph = "I am planning a small vegetable garden behind our house and would like some advice. The plot is about four by six metres, gets sun from late morning until evening, and the soil is heavy clay that stays wet after rain. Could you suggest a layout? ";
    let mut text = paragraph.repeat(4096 / paragraph.len() + 1);
    text.truncate(4096);
    let detector = Detector::shared();
    let normalized = normalize(&text).text;
    let n = 20_000;
    let time = |name: &str, f: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        let per = started.elapsed().as_secs_f64() / f64::from(n);
        println!(
            "{name:<20} {:>8.2} µs  {:>6.2} ns/byte",
            per * 1e6,
            per * 1e9 / text.len() as f64
        );
    };
    time("normalize", &|| {
        black_box(normalize(black_box(&text)));
    });
    let simple = "hello world ".repeat(342);
    time("normalize simple", &|| {
        black_box(normalize(black_box(&simple)));
    });
    let typographic = text
        .replace("Could you", "\u{201c}Could you")
        .replace("out?", "out?\u{201d} \u{2014}");
    time("normalize typogr.", &|| {
        black_box(normalize(black_box(&typographic)));
    });
    let accented = "Der Kunde möchte die Lieferung am Montag früh; la réunion est prévue à quatorze heures, après le déjeuner. ".repeat(40);
    time("normalize accented", &|| {
        black_box(normalize(black_box(&accented)));
    });
    time("assess accented", &|| {
        black_box(detector.assess(black_box(&accented), Trust::User));
    });
    time("decode typogr.", &|| {
        black_box(decode::payloads(black_box(&typographic)));
    });
    time("copy+lowercase", &|| {
        black_box(black_box(&text).to_ascii_lowercase());
    });
    time("rules", &|| {
        black_box(detector.rules().scan(black_box(&normalized)));
    });
    time("decode", &|| {
        black_box(decode::payloads(black_box(&text)));
    });
    time("tokenize", &|| {
        black_box(model::tokenize(black_box(&normalized)));
    });
    time("assess user", &|| {
        black_box(detector.assess(black_box(&text), Trust::User));
    });
    time("assess untrusted", &|| {
        black_box(detector.assess(black_box(&text), Trust::Untrusted));
    });
}
