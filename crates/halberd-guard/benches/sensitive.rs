//! Throughput of the sensitive-data detector: batch scanning of mixed text and
//! streaming redaction per chunk.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use halberd_guard::sensitive::{Detector, Policy, StreamRedactor};

#[path = "common/varied.rs"]
mod varied;

/// Ordinary prose and code with a value every ~100 bytes (dense), or the same
/// prose and code with the values only every ~2 KiB (sparse: a prompt with a
/// pasted record in it), repeated to size.
fn mixed(size: usize) -> String {
    text(size, 1)
}

fn sparse(size: usize) -> String {
    text(size, 16)
}

fn text(size: usize, every: usize) -> String {
    const PARAGRAPHS: &[&str] = &[
        "Please summarise the attached meeting notes and list the action items for each team. ",
        "The quarterly report shows revenue grew 12% to 4.2 million, with 350 new customers in 2024. ",
        "fn main() { let total: u64 = items.iter().map(|i| i.price * i.quantity).sum(); println!(\"{total}\"); }\n",
        "Contact Jane at jane.doe@example.com or +44 20 7946 0958 about invoice 88213. ",
        "Use the config: host = \"db.internal\", port = 5432, user = \"app\", timeout = 30s.\n",
        "Der Kunde möchte die Lieferung am Montag; la réunion est prévue à 14 h. ",
        "export AWS_ACCESS_KEY_ID=AKIAUJZDEGXDNCF32EPF and card 4111 1111 1111 1111 from 192.168.1.20.\n",
        "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id LIMIT 50;\n",
    ];
    const CLEAN: &[usize] = &[0, 1, 2, 4, 5, 7];
    let mut text = String::with_capacity(size + 256);
    let mut i = 0;
    while text.len() < size {
        let paragraph = if every == 1 || i % (every * PARAGRAPHS.len()) < PARAGRAPHS.len() {
            PARAGRAPHS[i % PARAGRAPHS.len()]
        } else {
            PARAGRAPHS[CLEAN[i % CLEAN.len()]]
        };
        text.push_str(paragraph);
        i += 1;
    }
    text
}

fn bench(c: &mut Criterion) {
    let detector = Detector::new();
    let mut group = c.benchmark_group("sensitive");
    for size in [1024, 4 * 1024, 1024 * 1024] {
        let text = mixed(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("scan mixed {} KiB", size / 1024), |b| {
            b.iter(|| detector.scan(&text))
        });
        let text = sparse(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("scan sparse {} KiB", size / 1024), |b| {
            b.iter(|| detector.scan(&text))
        });
    }
    // 256 different 4 KiB texts, one value in ten sentences, scanned in turn:
    // the lazy DFA meets new states the way it does under real traffic.
    let mut rng = varied::Rng::new(7);
    let texts: Vec<String> = (0..256).map(|_| varied::text(&mut rng, 4096, 10)).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("scan varied 256 x 4 KiB", |b| {
        b.iter(|| texts.iter().map(|t| detector.scan(t).len()).sum::<usize>())
    });
    let text = mixed(64 * 1024);
    let policy = std::sync::Arc::new(Policy::redact_all());
    for chunk in [16usize, 64] {
        let pieces: Vec<&str> = text
            .as_bytes()
            .chunks(chunk)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        group.throughput(Throughput::Elements(pieces.len() as u64));
        group.bench_function(
            format!("stream redact {chunk}-byte chunks (per chunk)"),
            |b| {
                b.iter(|| {
                    let mut redactor = StreamRedactor::new(&detector, policy.clone());
                    let mut out = 0;
                    for piece in &pieces {
                        out += redactor.push(piece).map(|s| s.len()).unwrap_or(0);
                    }
                    out
                })
            },
        );
    }
    group.finish();
}

/// Every adversarial text (a pattern's prefix or separator repeated) at 1 MiB,
/// next to prose of the same size: the scan must cost the same order per byte.
/// `cargo run --release -p halberd-guard --example scan_cost` prints the same
/// as a table of µs per KiB from 1 KiB to 8 MiB.
fn adversarial(c: &mut Criterion) {
    let detector = Detector::new();
    let mut group = c.benchmark_group("sensitive adversarial 1 MiB");
    group
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(1))
        .warm_up_time(std::time::Duration::from_millis(300));
    let size = 1024 * 1024;
    let texts = std::iter::once(("prose", halberd_guard::fuzzing::prose(size)))
        .chain(halberd_guard::fuzzing::adversarial(size));
    for (name, text) in texts {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| detector.scan(&text)));
    }
    group.finish();
}

criterion_group!(benches, bench, adversarial);
criterion_main!(benches);
