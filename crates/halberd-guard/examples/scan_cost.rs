//! The sensitive-data scan's cost per KiB on prose and on every adversarial
//! text (`halberd_guard::fuzzing::adversarial`), whole and streamed in 16-byte
//! pieces, from 1 KiB to 8 MiB: linear means the column stays flat down the
//! sizes.
//!
//!   cargo run --release -p halberd-guard --example scan_cost
//!   cargo run --release -p halberd-guard --example scan_cost -- 65536   # one size

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use halberd_guard::sensitive::{Detector, Policy, StreamRedactor};

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1) {
        Some(s) => vec![s.parse().unwrap_or(64 << 10)],
        None => vec![1 << 10, 64 << 10, 1 << 20, 8 << 20],
    };
    let detector = Detector::shared();
    let policy = Arc::new(Policy::redact_all());
    println!("µs per KiB: whole-text scan / streamed in 16-byte pieces (worst text marked *)");
    print!("{:<14}", "text");
    for size in &sizes {
        print!("{:>22}", label(*size));
    }
    println!();
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let names: Vec<&str> = std::iter::once("prose")
        .chain(
            halberd_guard::fuzzing::adversarial(16)
                .into_iter()
                .map(|(n, _)| n),
        )
        .collect();
    for name in names {
        let mut row = Vec::new();
        for &size in &sizes {
            let text = if name == "prose" {
                halberd_guard::fuzzing::prose(size)
            } else {
                halberd_guard::fuzzing::adversarial(size)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t)
                    .unwrap_or_default()
            };
            let kib = text.len() as f64 / 1024.0;
            let whole = best(|| {
                std::hint::black_box(detector.scan(&text));
            });
            let streamed = best(|| {
                let mut r = StreamRedactor::new(detector, policy.clone());
                for piece in text.as_bytes().chunks(16) {
                    let piece = std::str::from_utf8(piece).unwrap_or("");
                    std::hint::black_box(r.push(piece).ok());
                }
                std::hint::black_box(r.finish().ok());
            });
            row.push((micros(whole) / kib, micros(streamed) / kib));
        }
        rows.push((name.to_owned(), row));
    }
    let worst: Vec<f64> = (0..sizes.len())
        .map(|i| {
            rows.iter()
                .map(|(_, r)| r[i].0.max(r[i].1))
                .fold(0.0, f64::max)
        })
        .collect();
    for (name, row) in &rows {
        print!("{name:<14}");
        for (i, (whole, streamed)) in row.iter().enumerate() {
            let mark = if whole.max(*streamed) >= worst[i] {
                "*"
            } else {
                " "
            };
            print!("{:>21}{mark}", format!("{whole:.2} / {streamed:.2}"));
        }
        println!();
    }
}

/// The fastest of a few runs (at least three, up to half a second).
fn best(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || (started.elapsed() < Duration::from_millis(500) && runs < 200) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}
