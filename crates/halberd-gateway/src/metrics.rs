//! Prometheus metrics (`GET /metrics` on the admin listener), first part of
//! issue 22.
//!
//! Every figure comes from a place that already records the event once: the
//! exchange's finaliser (`pipeline::finish`, which also writes the usage
//! record and the `exchange finished` log line), the guard and limit events
//! (`events.rs`, which write the guard and limit log lines), and the stage
//! timer. So the log, the usage record and the metrics count the same
//! exchanges.
//!
//! Labels are bounded sets: API, provider and model names, statuses and
//! codes, guard and limit names; never user content, never a user or key.
//! A client can choose a model name within a pattern route (`gpt-*`), so
//! each family keeps at most [`MAX_SERIES`] label sets; beyond that a new
//! combination is counted under `other` in every label.
//!
//! Process-wide, like the stage timer: one gateway per process in
//! production; tests read differences.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// The most label sets one family keeps.
pub const MAX_SERIES: usize = 2_000;

/// Histogram buckets, in seconds: 1 ms to 2 minutes.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Family<T> {
    series: BTreeMap<Vec<String>, T>,
}

impl<T: Default> Family<T> {
    fn get(&mut self, values: Vec<String>) -> &mut T {
        if self.series.len() >= MAX_SERIES && !self.series.contains_key(&values) {
            let other = vec!["other".to_owned(); values.len()];
            return self.series.entry(other).or_default();
        }
        self.series.entry(values).or_default()
    }
}

#[derive(Default)]
struct Registry {
    requests: Family<u64>,
    tokens: Family<u64>,
    cost_nanos_usd: Family<u64>,
    guard_actions: Family<u64>,
    limit_refusals: Family<u64>,
    upstream_errors: Family<u64>,
    request_duration: Family<Histogram>,
    upstream_duration: Family<Histogram>,
    time_to_first_token: Family<Histogram>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// Label values as they go out: printable, cut, never empty.
fn value(v: &str) -> String {
    let v: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
    if v.is_empty() { "none".into() } else { v }
}

/// One exchange that reached a provider, as its finaliser saw it end.
pub struct Exchange<'a> {
    pub api: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub status: u16,
    /// `completed`, `client_disconnected`, or the error code it failed with.
    pub outcome: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cost in billionths of a dollar, when the model is priced.
    pub cost_nanos_usd: Option<u64>,
    pub elapsed: Duration,
}

/// A model name as a label. Within a pattern route (`gpt-*`) the client
/// chooses it, so it is user content: one that holds anything the
/// sensitive-data detector finds is shown as `redacted`.
fn model_label(model: &str) -> String {
    if halberd_guard::sensitive::Detector::shared()
        .scan(model)
        .is_empty()
    {
        value(model)
    } else {
        "redacted".into()
    }
}

pub fn exchange(e: &Exchange<'_>) {
    let model = model_label(e.model);
    with(|r| {
        let (api, provider) = (value(e.api), value(e.provider));
        *r.requests.get(vec![
            api.clone(),
            model.clone(),
            provider.clone(),
            e.status.to_string(),
            value(e.outcome),
        ]) += 1;
        *r.tokens.get(vec![model.clone(), "input".into()]) += e.input_tokens;
        *r.tokens.get(vec![model.clone(), "output".into()]) += e.output_tokens;
        if let Some(cost) = e.cost_nanos_usd {
            *r.cost_nanos_usd.get(vec![model]) += cost;
        }
        if e.outcome.starts_with("upstream_") {
            *r.upstream_errors.get(vec![provider, value(e.outcome)]) += 1;
        }
        r.request_duration
            .get(vec![api])
            .observe(e.elapsed.as_secs_f64());
    });
}

pub fn guard_action(guard: &str, action: &str) {
    with(|r| *r.guard_actions.get(vec![value(guard), value(action)]) += 1);
}

pub fn limit_refusal(limit: &str, scope: &str) {
    with(|r| *r.limit_refusals.get(vec![value(limit), value(scope)]) += 1);
}

pub fn upstream_duration(provider: &str, elapsed: Duration) {
    with(|r| {
        r.upstream_duration
            .get(vec![value(provider)])
            .observe(elapsed.as_secs_f64())
    });
}

pub fn time_to_first_token(api: &str, elapsed: Duration) {
    with(|r| {
        r.time_to_first_token
            .get(vec![value(api)])
            .observe(elapsed.as_secs_f64())
    });
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(names: &[&'static str], values: &[String]) -> Labels {
    names.iter().copied().zip(values.iter().cloned()).collect()
}

fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn counter(out: &mut String, name: &str, help: &str, names: &[&'static str], f: &Family<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (values, n) in &f.series {
        let _ = writeln!(
            out,
            "{name}{} {n}",
            render_labels(&labels(names, values), None)
        );
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    names: &[&'static str],
    f: &Family<Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (values, h) in &f.series {
        let l = labels(names, values);
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{} {count}",
                render_labels(&l, Some(("le", bound.to_string())))
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            render_labels(&l, Some(("le", "+Inf".into()))),
            h.count
        );
        let _ = writeln!(out, "{name}_sum{} {}", render_labels(&l, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", render_labels(&l, None), h.count);
    }
}

/// The Prometheus text exposition (version 0.0.4) of every family, and the
/// gauges read now.
pub fn render(ledger_queued: usize, ledger_capacity: usize) -> String {
    let mut out = String::new();
    with(|r| {
        counter(
            &mut out,
            "halberd_requests_total",
            "Exchanges that reached a provider: the provider's status, and the outcome (completed, client_disconnected, or the error code the gateway ended it with, e.g. a refused tool call after a 200).",
            &["api", "model", "provider", "status", "outcome"],
            &r.requests,
        );
        counter(
            &mut out,
            "halberd_tokens_total",
            "Tokens billed (provider-reported, or counted when it reported none).",
            &["model", "direction"],
            &r.tokens,
        );
        let _ = writeln!(
            out,
            "# HELP halberd_cost_usd_total Cost of priced models in US dollars.\n# TYPE halberd_cost_usd_total counter"
        );
        for (values, nanos) in &r.cost_nanos_usd.series {
            let _ = writeln!(
                out,
                "halberd_cost_usd_total{} {}",
                render_labels(&labels(&["model"], values), None),
                *nanos as f64 / 1e9
            );
        }
        counter(
            &mut out,
            "halberd_guard_actions_total",
            "Guard decisions (blocks, flags, redactions, removals), by guard and action.",
            &["guard", "action"],
            &r.guard_actions,
        );
        counter(
            &mut out,
            "halberd_limit_refusals_total",
            "Requests refused by a rate, concurrency or budget limit.",
            &["limit", "scope"],
            &r.limit_refusals,
        );
        counter(
            &mut out,
            "halberd_upstream_errors_total",
            "Exchanges that failed at the provider, by error code.",
            &["provider", "code"],
            &r.upstream_errors,
        );
        histogram(
            &mut out,
            "halberd_request_duration_seconds",
            "From the request's arrival to the end of its exchange.",
            &["api"],
            &r.request_duration,
        );
        histogram(
            &mut out,
            "halberd_upstream_duration_seconds",
            "From sending the request upstream to the provider's response head.",
            &["provider"],
            &r.upstream_duration,
        );
        histogram(
            &mut out,
            "halberd_time_to_first_token_seconds",
            "Streamed exchanges: from the request's arrival to the first generated text sent on.",
            &["api"],
            &r.time_to_first_token,
        );
    });
    let _ = writeln!(
        out,
        "# HELP halberd_usage_queue_records Usage records waiting for the store.\n# TYPE halberd_usage_queue_records gauge\nhalberd_usage_queue_records {ledger_queued}"
    );
    let _ = writeln!(
        out,
        "# HELP halberd_usage_queue_capacity Room in the usage queue.\n# TYPE halberd_usage_queue_capacity gauge\nhalberd_usage_queue_capacity {ledger_capacity}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_bounded_and_values_escaped() {
        let mut f: Family<u64> = Family::default();
        for i in 0..MAX_SERIES + 10 {
            *f.get(vec![format!("m{i}")]) += 1;
        }
        assert_eq!(f.series.len(), MAX_SERIES + 1);
        assert_eq!(f.series[&vec!["other".to_owned()]], 10);
        assert_eq!(value("a\nb\u{0}c"), "abc");
        assert_eq!(value(""), "none");
        assert_eq!(escape("say \"hi\"\\"), "say \\\"hi\\\"\\\\");
    }

    #[test]
    fn model_names_holding_secrets_or_pii_are_not_labels() {
        assert_eq!(model_label("mock-1"), "mock-1");
        assert_eq!(model_label("gpt-jane.doe@example.com"), "redacted");
        assert_eq!(
            model_label("gpt-ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN"),
            "redacted"
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.02, 3.0, 500.0] {
            h.observe(s);
        }
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[4], 2); // <= 0.025
        assert_eq!(h.counts[BUCKETS.len() - 1], 3); // <= 120
        assert_eq!(h.count, 4);
    }
}
