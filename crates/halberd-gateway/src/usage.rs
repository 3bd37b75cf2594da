//! Usage reports (`halberd usage`, `GET /admin/usage`): requests, tokens,
//! cost, estimated and failed exchanges from the usage records, grouped by
//! key, user, model or UTC day, over a time window.

use halberd_store::{UsageGroup, UsageRow};

/// A time bound: `YYYY-MM-DD` (UTC midnight), `YYYY-MM-DDTHH:MM:SSZ`, Unix
/// seconds, or a duration before `now` (`24h`, `7d`).
pub fn parse_bound(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("{s:?}: too large"));
    }
    if let Some(t) = parse_date_time(s) {
        return Ok(t);
    }
    match crate::duration::parse_duration(s) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{s:?} is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, Unix seconds, or a duration ago such as 24h or 7d"
        )),
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` as Unix seconds (UTC).
fn parse_date_time(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in(year, month)
    {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(t) => {
            let mut hms = t.splitn(3, ':');
            let h: i64 = hms.next()?.parse().ok()?;
            let m: i64 = hms.next()?.parse().ok()?;
            let sec: i64 = hms.next()?.parse().ok()?;
            if h > 23 || m > 59 || sec > 59 {
                return None;
            }
            h * 3600 + m * 60 + sec
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + seconds)
}

fn days_in(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Dollars with six decimals from billionths.
fn dollars(nanos: u64) -> String {
    format!(
        "{}.{:06}",
        nanos / 1_000_000_000,
        nanos % 1_000_000_000 / 1_000
    )
}

/// One row as JSON: the group under its own name, cost in dollars.
pub fn row_json(by: UsageGroup, row: &UsageRow) -> serde_json::Value {
    serde_json::json!({
        by.as_str(): row.group,
        "requests": row.totals.requests,
        "input_tokens": row.totals.input_tokens,
        "output_tokens": row.totals.output_tokens,
        "cost_usd": dollars(row.totals.cost.nanos()),
        "estimated": row.totals.estimated,
        "failed": row.failed,
    })
}

/// The report as CSV, with a header line; fields quoted where needed.
pub fn csv(by: UsageGroup, rows: &[UsageRow]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = format!(
        "{},requests,input_tokens,output_tokens,cost_usd,estimated,failed\n",
        by.as_str()
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            quote(&r.group),
            r.totals.requests,
            r.totals.input_tokens,
            r.totals.output_tokens,
            dollars(r.totals.cost.nanos()),
            r.totals.estimated,
            r.failed
        ));
    }
    out
}

/// The report as a table for people, with a total line.
pub fn table(by: UsageGroup, rows: &[UsageRow]) -> String {
    let mut out = format!(
        "{:<32} {:>9} {:>13} {:>13} {:>14} {:>9} {:>7}\n",
        by.as_str(),
        "requests",
        "input tokens",
        "output tokens",
        "cost (USD)",
        "estimated",
        "failed"
    );
    let mut total = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for r in rows {
        let name: String = r
            .group
            .chars()
            .filter(|c| !c.is_control())
            .take(32)
            .collect();
        let name = if name.is_empty() { "-".into() } else { name };
        out.push_str(&format!(
            "{name:<32} {:>9} {:>13} {:>13} {:>14} {:>9} {:>7}\n",
            r.totals.requests,
            r.totals.input_tokens,
            r.totals.output_tokens,
            dollars(r.totals.cost.nanos()),
            r.totals.estimated,
            r.failed
        ));
        total.0 += r.totals.requests;
        total.1 += r.totals.input_tokens;
        total.2 += r.totals.output_tokens;
        total.3 += r.totals.cost.nanos();
        total.4 += r.totals.estimated;
        total.5 += r.failed;
    }
    out.push_str(&format!(
        "{:<32} {:>9} {:>13} {:>13} {:>14} {:>9} {:>7}\n",
        "total",
        total.0,
        total.1,
        total.2,
        dollars(total.3),
        total.4,
        total.5
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_every_form() {
        let now = 1_709_337_600; // 2024-03-02
        assert_eq!(parse_bound("2024-03-01", now), Ok(1_709_251_200));
        assert_eq!(
            parse_bound("2024-03-01T01:02:03Z", now),
            Ok(1_709_251_200 + 3723)
        );
        assert_eq!(parse_bound("1709251200", now), Ok(1_709_251_200));
        assert_eq!(parse_bound("24h", now), Ok(now - 86_400));
        assert_eq!(parse_bound("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(parse_bound("2024-02-29", now), Ok(1_709_164_800));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "yesterday",
            "2024-03-01T25:00:00Z",
            "",
        ] {
            assert!(parse_bound(bad, now).is_err(), "{bad}");
        }
        // Against a plain count of days: every first of the month 1970-2100.
        let mut days = 0;
        for year in 1970..2100 {
            for month in 1..=12 {
                assert_eq!(days_from_civil(year, month, 1), days, "{year}-{month}");
                days += i64::from(days_in(year, month));
            }
        }
    }

    #[test]
    fn csv_quotes_and_dollars() {
        let row = UsageRow {
            group: "a,\"b\"".into(),
            totals: halberd_store::UsageTotals {
                requests: 2,
                input_tokens: 10,
                output_tokens: 5,
                cost: halberd_store::Usd(1_234_567_891),
                estimated: 1,
            },
            failed: 0,
        };
        let text = csv(UsageGroup::User, std::slice::from_ref(&row));
        assert_eq!(
            text,
            "user,requests,input_tokens,output_tokens,cost_usd,estimated,failed\n\"a,\"\"b\"\"\",2,10,5,1.234567,1,0\n"
        );
        assert_eq!(row_json(UsageGroup::User, &row)["cost_usd"], "1.234567");
        assert!(table(UsageGroup::User, &[row]).contains("total"));
    }
}
