//! Per-layer time of prompt-injection detection on a 4 KiB prompt, without a
//! benchmark harness (quick checks while tuning; the criterion bench
//! `injection` is the reference).
//!
//! Each case runs in 40 batches and prints the fastest batch's time per call
//! and the median batch's. On a shared VM other tenants only ever add time,
//! so the fastest batch is the cost of the code on an idle core and the
//! median is what a run met; compare binaries on both, in turn.
//!
//! `injection_timing assess N` only assesses the 64 varied texts N times
//! over, for `bench/instructions.sh`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use halberd_guard::injection::{Detector, Trust, decode, model, normalize};

#[path = "../benches/common/varied.rs"]
mod varied;

fn main() {
    let paragraph = "I am planning a small vegetable garden behind our house and would like some advice. The plot is about four by six metres, gets sun from late morning until evening, and the soil is heavy clay that stays wet after rain. Could you suggest a layout? ";
    let mut text = paragraph.repeat(4096 / paragraph.len() + 1);
    text.truncate(4096);
    let detector = Detector::shared();
    let normalized = normalize(&text).text;
    // The criterion bench's 64 varied texts, in turn.
    let mut rng = varied::Rng::new(11);
    let texts: Vec<String> = (0..64).map(|_| varied::text(&mut rng, 4096, 5)).collect();
    let varied_normalized: Vec<String> = texts.iter().map(|t| normalize(t).text).collect();
    for t in &texts {
        black_box(detector.assess(t, Trust::User));
    }
    // `injection_timing assess N`: only assess the varied texts N times over,
    // untimed, for an instruction count (`bench/instructions.sh`).
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("assess") {
        let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        for _ in 0..rounds {
            for t in &texts {
                black_box(detector.assess(black_box(t), Trust::User));
            }
        }
        return;
    }
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 500;
    let time = |name: &str, f: &dyn Fn(usize)| {
        let mut batches: Vec<f64> = (0..BATCHES)
            .map(|b| {
                let started = Instant::now();
                for k in 0..PER_BATCH {
                    f(b * PER_BATCH + k);
                }
                started.elapsed().as_secs_f64() * 1e6 / PER_BATCH as f64
            })
            .collect();
        batches.sort_by(f64::total_cmp);
        println!(
            "{name:<20} fastest {:>7.2} µs  median {:>7.2} µs",
            batches[0],
            batches[BATCHES / 2]
        );
    };
    time("normalize", &|_| {
        black_box(normalize(black_box(&text)));
    });
    let simple = "hello world ".repeat(342);
    time("normalize simple", &|_| {
        black_box(normalize(black_box(&simple)));
    });
    let typographic = text
        .replace("Could you", "\u{201c}Could you")
        .replace("out?", "out?\u{201d} \u{2014}");
    time("normalize typogr.", &|_| {
        black_box(normalize(black_box(&typographic)));
    });
    let accented = "Der Kunde möchte die Lieferung am Montag früh; la réunion est prévue à quatorze heures, après le déjeuner. ".repeat(40);
    time("normalize accented", &|_| {
        black_box(normalize(black_box(&accented)));
    });
    time("assess accented", &|_| {
        black_box(detector.assess(black_box(&accented), Trust::User));
    });
    time("decode typogr.", &|_| {
        black_box(decode::payloads(black_box(&typographic)));
    });
    time("copy+lowercase", &|_| {
        black_box(black_box(&text).to_ascii_lowercase());
    });
    time("rules", &|_| {
        black_box(detector.rules().scan(black_box(&normalized)));
    });
    time("decode", &|_| {
        black_box(decode::payloads(black_box(&text)));
    });
    time("tokenize", &|_| {
        black_box(model::tokenize(black_box(&normalized)));
    });
    time("assess user", &|_| {
        black_box(detector.assess(black_box(&text), Trust::User));
    });
    time("assess untrusted", &|_| {
        black_box(detector.assess(black_box(&text), Trust::Untrusted));
    });
    time("normalize varied", &|k| {
        black_box(normalize(black_box(&texts[k % 64])));
    });
    time("tokenize varied", &|k| {
        black_box(model::tokenize(black_box(&varied_normalized[k % 64])));
    });
    time("assess varied", &|k| {
        black_box(detector.assess(black_box(&texts[k % 64]), Trust::User));
    });
}
