//! Money as an integer: nano-dollars. Budgets and prices are summed over
//! millions of requests; floating point would drift, and two replicas adding
//! the same costs in another order must reach the same total.

use std::fmt;
use std::str::FromStr;

/// An amount of US dollars, in nano-dollars (10⁻⁹ USD). `u64` holds up to
/// about 18 billion dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(pub u64);

impl Usd {
    pub const NANOS_PER_DOLLAR: u64 = 1_000_000_000;
    pub const ZERO: Usd = Usd(0);

    pub fn nanos(self) -> u64 {
        self.0
    }

    /// The cost of `tokens` at `self` per million tokens, rounded up to the
    /// next nano-dollar (a budget errs towards refusing, never towards
    /// overspending).
    pub fn per_million(self, tokens: u64) -> Usd {
        let product = u128::from(self.0) * u128::from(tokens);
        Usd(u64::try_from(product.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

/// A decimal amount: digits, an optional point and at most nine decimals. No
/// sign, no exponent: `"12"`, `"0.5"`, `"0.000000375"`.
impl FromStr for Usd {
    type Err = String;

    fn from_str(text: &str) -> Result<Usd, String> {
        let text = text.trim().trim_start_matches('$');
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(format!(
                "{text:?} is not an amount in dollars (such as 12 or 0.25)"
            ));
        }
        if frac.len() > 9 {
            return Err(format!(
                "{text:?} has more than nine decimals (the smallest unit is a nano-dollar)"
            ));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("{text:?} is too large"))?
        };
        let frac_nanos: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
        whole
            .checked_mul(Usd::NANOS_PER_DOLLAR)
            .and_then(|n| n.checked_add(frac_nanos))
            .map(Usd)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

/// At least two decimals, at most nine, trailing zeros dropped: `12.50`,
/// `0.000375`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Usd::NANOS_PER_DOLLAR;
        let frac = format!("{:09}", self.0 % Usd::NANOS_PER_DOLLAR);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{whole}.{shown}")
    }
}

/// As a JSON string (`"12.50"`), so no client parses it into a float.
impl serde::Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From a string or a number. A JSON or TOML number is read through its
/// shortest decimal form, so `0.1` is exactly 100 000 000 nano-dollars.
impl<'de> serde::Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount in US dollars, such as 12.5 or \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Usd, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Usd, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Usd, E> {
                if v < 0 {
                    return Err(E::custom("an amount must not be negative"));
                }
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Usd, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom("an amount must be a non-negative number"));
                }
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::Usd;

    #[test]
    fn parses_and_prints_exactly() {
        assert_eq!("12".parse::<Usd>(), Ok(Usd(12_000_000_000)));
        assert_eq!("0.1".parse::<Usd>(), Ok(Usd(100_000_000)));
        assert_eq!(".5".parse::<Usd>(), Ok(Usd(500_000_000)));
        assert_eq!("$3.000000001".parse::<Usd>(), Ok(Usd(3_000_000_001)));
        assert_eq!(Usd(12_500_000_000).to_string(), "12.50");
        assert_eq!(Usd(375).to_string(), "0.000000375");
        assert_eq!(Usd(0).to_string(), "0.00");
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0.0000000001",
            "1.2.3",
            "abc",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Usd>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn reads_json_numbers_through_their_decimal_form() {
        let v: Usd = serde_json::from_str("0.1").unwrap();
        assert_eq!(v, Usd(100_000_000));
        let v: Usd = serde_json::from_str("\"2.5\"").unwrap();
        assert_eq!(v, Usd(2_500_000_000));
        assert!(serde_json::from_str::<Usd>("-1").is_err());
        assert_eq!(
            serde_json::to_string(&Usd(2_500_000_000)).unwrap(),
            "\"2.50\""
        );
    }

    #[test]
    fn costs_round_up_to_the_nano_dollar() {
        // $2.50 per million tokens: 1 token is 2500 nano-dollars.
        assert_eq!(Usd(2_500_000_000).per_million(1), Usd(2_500));
        // $0.0375 per million: 1 token is 37.5 nano-dollars, rounded up.
        assert_eq!(Usd(37_500_000).per_million(1), Usd(38));
        assert_eq!(Usd(37_500_000).per_million(2), Usd(75));
        assert_eq!(Usd(u64::MAX).per_million(u64::MAX), Usd(u64::MAX));
    }
}
