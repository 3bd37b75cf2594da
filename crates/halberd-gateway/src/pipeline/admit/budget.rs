//! Prices and budget periods.
//!
//! Cost is integer nano-dollars ([`Usd`]); a price is dollars per million
//! tokens, so a token costs `price / 10⁶` nano-dollars, rounded up once per
//! request. Budget periods are UTC calendar days and months: a daily budget
//! renews at 00:00 UTC, a monthly one on the first of the month.

use std::collections::BTreeMap;

use halberd_protocol::openai::Usage;
use halberd_store::Usd;

/// One model's price, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: Usd,
    pub output: Usd,
    /// Prompt tokens the provider read from its cache.
    pub cached_input: Usd,
}

impl Price {
    /// The most a request can cost: every prompt token at the uncached price,
    /// plus its whole output cap.
    pub fn reservation(&self, prompt: u64, max_output: u64) -> Usd {
        self.input
            .per_million(prompt)
            .saturating_add(self.output.per_million(max_output))
    }

    /// What the usage a provider reported costs.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        self.input
            .per_million(usage.input_tokens - cached)
            .saturating_add(self.cached_input.per_million(cached))
            .saturating_add(self.output.per_million(usage.output_tokens))
    }
}

/// Prices by provider model id. A name matches itself and every model id that
/// extends it after a `-` (`gpt-4o` prices `gpt-4o-2024-08-06`); the longest
/// matching name wins, so `gpt-4o-mini` is not priced as `gpt-4o`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

/// Built-in prices (USD per million tokens: input, cached input, output), from
/// the providers' public price lists as of 2026; `[prices]` in the config
/// overrides or extends them. `mock` prices the built-in mock provider, so that
/// cost budgets can be tried without a provider account.
const BUILTIN: &[(&str, &str, &str, &str)] = &[
    ("gpt-5", "1.25", "0.125", "10"),
    ("gpt-5-mini", "0.25", "0.025", "2"),
    ("gpt-5-nano", "0.05", "0.005", "0.4"),
    ("gpt-4.1", "2", "0.5", "8"),
    ("gpt-4.1-mini", "0.4", "0.1", "1.6"),
    ("gpt-4.1-nano", "0.1", "0.025", "0.4"),
    ("gpt-4o", "2.5", "1.25", "10"),
    ("gpt-4o-mini", "0.15", "0.075", "0.6"),
    ("o3", "2", "0.5", "8"),
    ("o4-mini", "1.1", "0.275", "4.4"),
    ("text-embedding-3-small", "0.02", "0.02", "0"),
    ("text-embedding-3-large", "0.13", "0.13", "0"),
    ("claude-opus-4", "15", "1.5", "75"),
    ("claude-opus-4-1", "15", "1.5", "75"),
    ("claude-sonnet-4", "3", "0.3", "15"),
    ("claude-sonnet-4-5", "3", "0.3", "15"),
    ("claude-haiku-4-5", "1", "0.1", "5"),
    ("claude-3-5-haiku", "0.8", "0.08", "4"),
    ("claude-3-7-sonnet", "3", "0.3", "15"),
    ("mock", "1", "0.1", "2"),
];

impl PriceTable {
    pub fn builtin() -> PriceTable {
        let mut table = PriceTable::default();
        for (model, input, cached, output) in BUILTIN {
            let usd = |s: &str| s.parse::<Usd>().unwrap_or(Usd::ZERO);
            table.set(
                model,
                Price {
                    input: usd(input),
                    output: usd(output),
                    cached_input: usd(cached),
                },
            );
        }
        table
    }

    pub fn set(&mut self, model: &str, price: Price) {
        self.prices.insert(model.to_owned(), price);
    }

    /// The price of a provider model id, if any name covers it: the id
    /// itself, or a priced name followed only by a dated or numbered snapshot
    /// (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`, `my-model-v2`) or
    /// `-latest`. A
    /// variant with a word of its own (`o3-pro`, `gpt-4o-audio-preview`) is
    /// often priced differently, so it is not priced as its base model: it
    /// needs its own `[prices]` entry (else `model_not_priced` under a cost
    /// budget).
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        let mut end = model.len();
        while let Some(cut) = model[..end].rfind('-') {
            let snapshot = model[cut + 1..].split('-').all(|segment| {
                let number = segment.strip_prefix('v').unwrap_or(segment);
                segment == "latest"
                    || (!number.is_empty()
                        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            });
            if !snapshot {
                return None;
            }
            if let Some(p) = self.prices.get(&model[..cut]) {
                return Some(*p);
            }
            end = cut;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }

    /// The period containing `unix` (seconds): its start, its end (both Unix
    /// seconds) and a stable name (`d20261126`, `m202611`).
    pub fn window(self, unix: i64) -> (i64, i64, String) {
        let days = unix.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        match self {
            Period::Day => (
                days * 86_400,
                (days + 1) * 86_400,
                format!("d{y:04}{m:02}{d:02}"),
            ),
            Period::Month => {
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1);
                (start * 86_400, end * 86_400, format!("m{y:04}{m:02}"))
            }
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        // 2026-11-26T06:40:15Z
        let t = 1_795_675_215;
        let (start, end, name) = Period::Day.window(t);
        assert_eq!(name, "d20261126");
        assert_eq!((start % 86_400, end - start), (0, 86_400));
        assert!(start <= t && t < end);
        let (start, end, name) = Period::Month.window(t);
        assert_eq!(name, "m202611");
        assert_eq!((end - start) / 86_400, 30);
        assert_eq!(Period::Day.window(start).2, "d20261101");
        assert_eq!(Period::Day.window(end).2, "d20261201");
        assert_eq!(Period::Day.window(end - 1).2, "d20261130");
        // December rolls into January; February of a leap year has 29 days.
        let (_, end, name) = Period::Month.window(1_798_675_200); // 2026-12-31
        assert_eq!(name, "m202612");
        assert_eq!(Period::Day.window(end).2, "d20270101");
        let (s, e, name) = Period::Month.window(1_709_251_199); // 2024-02-29T23:59:59Z
        assert_eq!(name, "m202402");
        assert_eq!((e - s) / 86_400, 29);
        assert_eq!(Period::Day.window(0).2, "d19700101");
    }

    #[test]
    fn prices_match_the_longest_dash_prefix() {
        let t = PriceTable::builtin();
        assert_eq!(t.get("gpt-4o-2024-08-06"), t.get("gpt-4o"));
        assert_ne!(t.get("gpt-4o-mini-2024-07-18"), t.get("gpt-4o"));
        assert_eq!(t.get("gpt-4o-mini-2024-07-18"), t.get("gpt-4o-mini"));
        assert_eq!(
            t.get("claude-sonnet-4-5-20250929"),
            t.get("claude-sonnet-4-5")
        );
        assert_eq!(t.get("mock-1"), t.get("mock"));
        assert_eq!(
            t.get("claude-3-7-sonnet-latest"),
            t.get("claude-3-7-sonnet")
        );
        assert_eq!(t.get("gpt-4oo"), None, "a prefix must end at a dash");
        assert_eq!(t.get("llama-3"), None);
        // Variants with a word of their own are priced on their own.
        assert!(t.get("o3").is_some());
        assert_eq!(t.get("o3-pro"), None);
        assert_eq!(t.get("o3-pro-2025-06-10"), None);
        assert_eq!(t.get("gpt-4o-audio-preview"), None);
        assert_eq!(t.get("mock-large"), None);
    }

    #[test]
    fn cost_is_exact_integer_arithmetic() {
        let p = PriceTable::builtin().get("gpt-4o").unwrap();
        // 1000 prompt tokens of which 400 cached, 500 output:
        // 600 × 2500 + 400 × 1250 + 500 × 10000 nano-dollars.
        let usage = Usage {
            input_tokens: 1000,
            cached_input_tokens: 400,
            output_tokens: 500,
        };
        assert_eq!(p.cost(&usage), Usd(1_500_000 + 500_000 + 5_000_000));
        assert_eq!(p.reservation(1000, 500), Usd(2_500_000 + 5_000_000));
        assert!(p.cost(&usage) <= p.reservation(1000, 500));
        // Summing a million one-token costs gives exactly a million times one.
        let one = Price {
            input: "0.15".parse().unwrap(),
            output: Usd::ZERO,
            cached_input: Usd::ZERO,
        };
        let single = one.cost(&Usage {
            input_tokens: 1,
            ..Usage::default()
        });
        let total = (0..1_000_000).fold(Usd::ZERO, |acc, _| acc.saturating_add(single));
        assert_eq!(total, Usd(150 * 1_000_000));
    }
}
