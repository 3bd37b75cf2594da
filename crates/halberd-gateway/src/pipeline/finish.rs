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
        }
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
        events::ExchangeFinished {
            request_id: &self.request_id,
            api: self.api.as_str(),
            model: &self.model,
            provider: &self.provider,
            status: self.status,
            outcome,
            input_tokens: self.usage.map(|u| u.input_tokens),
            output_tokens: self.usage.map(|u| u.output_tokens),
            bytes: self.bytes,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
        .emit();
    }
}
