//! The finaliser: one record of how each exchange that reached an upstream
//! ended, written when the guard is dropped, so that it is written on success,
//! on upstream error, on timeout and when the client goes away mid-stream alike.
//!
//! It is also where accounting happens: the reservation taken at admission is
//! settled against the provider's usage, and one usage record (tokens, cost,
//! whether estimated) is written to the store. When the provider never reported
//! usage (the client went away, the stream broke), the tokens are the prompt as
//! counted before the call plus the generated text actually relayed, counted
//! with the same tokenizer, and the record is marked estimated.
//!
//! Only the provider's *final* count is taken as the bill. A stream reports
//! running figures before it ends (Anthropic's `message_start` carries a
//! placeholder `output_tokens: 1`); a stream cut before its final usage is
//! settled on the larger of what the provider had reported and what was
//! relayed, and marked estimated, so that cutting a stream never lowers the
//! charge.

use halberd_protocol::Api;
use halberd_protocol::openai::Usage;

use crate::events;

#[derive(Debug)]
pub struct Finish {
    request_id: String,
    api: Api,
    model: String,
    provider: String,
    status: u16,
    usage: Option<Usage>,
    /// `usage` is the provider's final count for the exchange, not a running
    /// figure from the middle of a stream.
    usage_final: bool,
    bytes: usize,
    outcome: Outcome,
    started: tokio::time::Instant,
    /// The admission permit: its concurrency slot is held until this guard
    /// drops, i.e. until the exchange has ended however it ended.
    permit: Option<super::admit::Permit>,
    /// Settlement and the usage record, when the exchange is accounted.
    accounting: Option<Accounting>,
    /// Generated text relayed so far, counted locally only when needed.
    relayed: Relayed,
}

/// Relayed text counted once this much has gathered (memory stays bounded).
const COUNT_BATCH: usize = 16 * 1024;

/// The generated text relayed so far, for the count used when the provider
/// never reports its final usage. The deltas are kept (in one buffer, with
/// where each ends) and counted, each on its own (a provider's deltas fall on
/// token boundaries), in batches of [`COUNT_BATCH`] bytes and at the end:
/// counting every delta as it passed was a tokenizer call per streamed
/// event, for a figure almost never used.
#[derive(Debug, Default)]
struct Relayed {
    counted: u64,
    text: String,
    ends: Vec<usize>,
}

impl Relayed {
    fn push(&mut self, encoding: halberd_guard::tokens::Encoding, delta: &str) {
        self.text.push_str(delta);
        self.ends.push(self.text.len());
        if self.text.len() >= COUNT_BATCH {
            self.counted = self.tokens(encoding);
        }
    }

    /// Every delta's tokens so far; what was kept is counted and let go.
    fn tokens(&mut self, encoding: halberd_guard::tokens::Encoding) -> u64 {
        let mut start = 0;
        for &end in &self.ends {
            self.counted += encoding.count(&self.text[start..end]);
            start = end;
        }
        self.text.clear();
        self.ends.clear();
        self.counted
    }
}

/// What the finaliser needs to account for an exchange.
#[derive(Debug)]
pub struct Accounting {
    /// Room for this exchange's usage record, reserved before forwarding.
    pub slot: crate::ledger::Slot,
    pub key_id: String,
    pub user: Option<String>,
    pub price: Option<super::admit::budget::Price>,
    /// Tokens and money reserved at admission.
    pub reservation: Option<super::admit::Reservation>,
    /// Counts the relayed text when the provider reports no usage.
    pub encoding: halberd_guard::tokens::Encoding,
    pub prompt: Prompt,
}

/// The prompt's tokens: counted before the call when a limit or a content
/// check needed them, else kept as text and counted only if the provider never
/// reports usage (counting costs tens of microseconds per 4 KiB; most
/// exchanges never need it).
#[derive(Debug)]
pub enum Prompt {
    Counted(u64),
    Uncounted(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running; if dropped like this, the client went away.
    Open,
    Completed,
    Failed(&'static str),
}

impl Finish {
    pub fn new(
        request_id: &str,
        api: Api,
        model: &str,
        provider: &str,
        started: tokio::time::Instant,
    ) -> Finish {
        Finish {
            request_id: request_id.to_owned(),
            api,
            model: model.to_owned(),
            provider: provider.to_owned(),
            status: 0,
            usage: None,
            usage_final: false,
            bytes: 0,
            outcome: Outcome::Open,
            started,
            permit: None,
            accounting: None,
            relayed: Relayed::default(),
        }
    }

    /// Accounts for the exchange when it ends: settles the reservation and
    /// records the usage.
    pub fn account(&mut self, accounting: Accounting) {
        self.accounting = Some(accounting);
    }

    /// Generated text the relay passed on (before redaction: what the provider
    /// produced, which is what it bills).
    pub fn relayed_text(&mut self, text: &str) {
        if let Some(a) = &self.accounting {
            self.relayed.push(a.encoding, text);
        }
    }

    pub fn counts_text(&self) -> bool {
        self.accounting.is_some()
    }

    /// Keeps the admission permit until the exchange ends.
    pub fn hold(&mut self, permit: super::admit::Permit) {
        self.permit = Some(permit);
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The provider's final usage for the exchange.
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
        self.usage_final = true;
    }

    /// A running figure from the middle of a stream: kept as a floor, never
    /// taken as the bill on its own.
    pub fn set_partial_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n;
    }

    pub fn has_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    pub fn completed(&mut self) {
        self.outcome = Outcome::Completed;
    }

    /// The exchange ended with `code`, one of the gateway's fixed error
    /// codes (a bounded set: it is a metrics label and a stored field).
    pub fn failed(&mut self, code: &'static str) {
        self.outcome = Outcome::Failed(code);
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Outcome::Open => "client_disconnected",
            Outcome::Completed => "completed",
            Outcome::Failed(code) => code,
        };
        let estimated = !self.usage_final;
        let mut settled = self.usage.filter(|_| self.usage_final);
        let mut cost_nanos = None;
        if let Some(a) = self.accounting.take() {
            // A provider bills what it answered: nothing when it refused or
            // never answered; the prompt and what was relayed when it answered
            // but never reported its final usage (what it did report is a
            // floor: input counts from the start of a stream are exact).
            let answered = (200..300).contains(&self.status);
            let usage = match settled {
                Some(u) => u,
                None if answered => {
                    let partial = self.usage.unwrap_or_default();
                    let input_tokens = if partial.input_tokens > 0 {
                        partial.input_tokens
                    } else {
                        match &a.prompt {
                            Prompt::Counted(n) => *n,
                            Prompt::Uncounted(parts) => {
                                a.encoding.count_parts(parts.iter().map(String::as_str))
                            }
                        }
                    };
                    Usage {
                        input_tokens,
                        cached_input_tokens: partial.cached_input_tokens.min(input_tokens),
                        output_tokens: partial.output_tokens.max(self.relayed.tokens(a.encoding)),
                    }
                }
                None => Usage::default(),
            };
            settled = Some(usage);
            let cost = a.price.map(|p| p.cost(&usage)).unwrap_or_default();
            cost_nanos = a.price.map(|_| cost.nanos());
            if let Some(r) = &a.reservation {
                r.settle(usage.input_tokens.saturating_add(usage.output_tokens), cost);
            }
            let record = halberd_store::UsageRecord {
                request_id: self.request_id.clone(),
                key_id: a.key_id,
                user_id: a.user,
                at: halberd_store::now_unix(),
                api: self.api.as_str().to_owned(),
                model: self.model.clone(),
                provider: self.provider.clone(),
                input_tokens: usage.input_tokens,
                cached_input_tokens: usage.cached_input_tokens,
                output_tokens: usage.output_tokens,
                cost,
                estimated,
                outcome: outcome.to_owned(),
            };
            a.slot.record(record);
        }
        crate::metrics::exchange(&crate::metrics::Exchange {
            api: self.api.as_str(),
            model: &self.model,
            provider: &self.provider,
            status: self.status,
            outcome,
            input_tokens: settled.map_or(0, |u| u.input_tokens),
            output_tokens: settled.map_or(0, |u| u.output_tokens),
            cost_nanos_usd: cost_nanos,
            elapsed: self.started.elapsed(),
        });
        events::ExchangeFinished {
            request_id: &self.request_id,
            api: self.api.as_str(),
            model: &self.model,
            provider: &self.provider,
            status: self.status,
            outcome,
            input_tokens: settled.map(|u| u.input_tokens),
            output_tokens: settled.map(|u| u.output_tokens),
            usage_estimated: estimated,
            bytes: self.bytes,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halberd_guard::tokens::Encoding;

    #[test]
    fn relayed_deltas_count_as_they_would_one_by_one_across_batches() {
        let encoding = Encoding::for_model(false, "gpt-4o");
        assert_eq!(encoding, Encoding::O200k);
        let deltas: Vec<String> = (0..3000)
            .map(|i| format!("word{} and more, ", i % 97))
            .collect();
        let one_by_one: u64 = deltas.iter().map(|d| encoding.count(d)).sum();
        let mut relayed = Relayed::default();
        let mut kept_most = 0;
        for d in &deltas {
            relayed.push(encoding, d);
            kept_most = kept_most.max(relayed.text.len());
        }
        assert!(relayed.counted > 0, "batches were counted on the way");
        assert!(
            kept_most < COUNT_BATCH + 64,
            "the kept text stays bounded: {kept_most}"
        );
        assert_eq!(relayed.tokens(encoding), one_by_one);
        // Counting again adds nothing.
        assert_eq!(relayed.tokens(encoding), one_by_one);
        // The concatenation would count fewer: the deltas' edges matter.
        assert!(encoding.count(&deltas.concat()) < one_by_one);
    }
}
