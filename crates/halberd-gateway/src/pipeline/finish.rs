//! The finaliser: one record of how each exchange that reached an upstream
//! ended, written when the guard is dropped, so that it is written on success,
//! on upstream error, on timeout and when the client goes away mid-stream alike.
//! Accounting and the audit trail will hang off this same guard.

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
    bytes: usize,
    outcome: Outcome,
    started: tokio::time::Instant,
    /// The admission permit: its concurrency slot is held until this guard
    /// drops, i.e. until the exchange has ended however it ended.
    permit: Option<super::admit::Permit>,
    /// The token reservation, settled against usage when this guard drops.
    tokens: Option<super::admit::TokenGrant>,
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
            bytes: 0,
            outcome: Outcome::Open,
            started,
            permit: None,
            tokens: None,
        }
    }

    /// Keeps the token reservation until the exchange ends, then settles it.
    pub fn hold_tokens(&mut self, grant: super::admit::TokenGrant) {
        self.tokens = Some(grant);
    }

    /// Keeps the admission permit until the exchange ends.
    pub fn hold(&mut self, permit: super::admit::Permit) {
        self.permit = Some(permit);
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

    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n;
    }

    pub fn completed(&mut self) {
        self.outcome = Outcome::Completed;
    }

    pub fn failed(&mut self, code: &str) {
        self.outcome = Outcome::Failed(match code {
            "upstream_timeout" => "upstream_timeout",
            "upstream_error" => "upstream_error",
            _ => "error",
        });
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Outcome::Open => "client_disconnected",
            Outcome::Completed => "completed",
            Outcome::Failed(code) => code,
        };
        // Settle the reservation: against the provider's usage when it said,
        // else against what was relayed (estimated: four bytes a token of the
        // response as sent, framing included, which errs high).
        let estimated = self.usage.is_none();
        if let Some(grant) = &self.tokens {
            let used = match self.usage {
                Some(u) => u.input_tokens + u.output_tokens,
                None => grant.prompt + (self.bytes as u64).div_ceil(4),
            };
            grant.settle(used);
        }
        events::ExchangeFinished {
            request_id: &self.request_id,
            api: self.api.as_str(),
            model: &self.model,
            provider: &self.provider,
            status: self.status,
            outcome,
            input_tokens: self.usage.map(|u| u.input_tokens),
            output_tokens: self.usage.map(|u| u.output_tokens),
            usage_estimated: estimated && self.tokens.is_some(),
            bytes: self.bytes,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
        .emit();
    }
}
