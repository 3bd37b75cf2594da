//! Varied text for benchmarks: a deterministic mix of prose, identifiers,
//! numbers, code, configuration, values and other scripts, different in every
//! paragraph. Repeating one paragraph keeps a lazy DFA's states and the
//! classifier's weights hot and hides what real traffic costs; this does not.
//! Every word here is ours.

const WORDS: &[&str] = &[
    "the",
    "report",
    "shows",
    "please",
    "summarise",
    "customer",
    "invoice",
    "meeting",
    "notes",
    "deploy",
    "server",
    "config",
    "timeout",
    "retry",
    "error",
    "value",
    "user",
    "account",
    "budget",
    "quarter",
    "revenue",
    "garden",
    "travel",
    "booking",
    "schedule",
    "draft",
    "review",
    "policy",
    "security",
    "token",
    "password",
    "key",
    "secret",
    "model",
    "agent",
    "reply",
    "thanks",
    "regards",
    "tomorrow",
    "Monday",
    "team",
    "project",
    "release",
];
const OTHER: &[&str] = &[
    "Kunde",
    "Lieferung",
    "réunion",
    "prévue",
    "año",
    "coração",
    "отчёт",
    "клиент",
    "встреча",
    "数据",
    "报告",
    "会议",
    "αναφορά",
    "πελάτης",
    "報告書",
    "顧客",
];
const CODE: &[&str] = &[
    "fn main() {",
    "let x = items.len();",
    "if (a && b) { return; }",
    "SELECT id FROM t;",
    "import os",
    "for i in range(10):",
    "x => x * 2",
    "</div>",
    "{\"ok\": true}",
    "host = \"db.internal\"",
    "port: 5432",
    "retries=3",
    "path=/var/log/app",
];

/// A small deterministic generator (xorshift64*), so every run sees the
/// same text.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn token(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// About `size` bytes of varied text; `values` in 0..=100 is the share of
/// sentences that carry a value (an e-mail address, a phone number, a card
/// number, an IP address or a credential).
pub fn text(rng: &mut Rng, size: usize, values: u64) -> String {
    let mut out = String::with_capacity(size + 200);
    while out.len() < size {
        match rng.next() % 10 {
            0..=5 => {
                for i in 0..(5 + rng.next() % 12) {
                    let word = if rng.next().is_multiple_of(12) {
                        rng.pick(OTHER)
                    } else {
                        rng.pick(WORDS)
                    };
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(word);
                    if rng.next().is_multiple_of(9) {
                        out.push_str(&format!(" {}", rng.next() % 100_000));
                    }
                    if rng.next().is_multiple_of(15) {
                        let len = 3 + (rng.next() % 10) as usize;
                        out.push_str(&format!(" {}_{}", rng.token(LOWER, len), rng.next() % 100));
                    }
                }
                out.push_str(". ");
            }
            6..=7 => {
                out.push_str(rng.pick(CODE));
                out.push('\n');
            }
            _ => {
                let len = 4 + (rng.next() % 8) as usize;
                out.push_str(&format!(
                    "{} = {}; ",
                    rng.token(LOWER, len),
                    rng.next() % 10_000
                ));
            }
        }
        if rng.next() % 100 < values {
            let value = match rng.next() % 5 {
                0 => format!(
                    "{}.{}@{}.example.com",
                    rng.token(LOWER, 5),
                    rng.token(LOWER, 6),
                    rng.token(LOWER, 7)
                ),
                1 => format!("+44 20 7946 {:04}", rng.next() % 10_000),
                2 => "4111 1111 1111 1111".to_string(),
                3 => format!(
                    "10.{}.{}.{}",
                    rng.next() % 256,
                    rng.next() % 256,
                    1 + rng.next() % 254
                ),
                _ => format!("api_key = \"{}\"", rng.token(ALNUM, 32)),
            };
            out.push_str(&format!("Value: {value}. "));
        }
    }
    out
}
