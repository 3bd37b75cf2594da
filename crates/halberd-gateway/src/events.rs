//! Typed events for what matters to security and operations. Each `emit()`
//! writes the one log line for the event (and, once metrics exist, bumps the
//! counter beside it), so the two cannot drift apart. Fields are ids, codes,
//! counts and durations: never a key, a secret or prompt text.

pub struct KeyRejected<'a> {
    pub request_id: &'a str,
    pub reason: &'static str,
    /// The public id part of a well-formed key; not a secret.
    pub key_id: Option<&'a str>,
}

impl KeyRejected<'_> {
    pub fn emit(&self) {
        tracing::warn!(target: "halberd::auth", request_id = self.request_id, reason = self.reason, key_id = self.key_id, "key rejected");
    }
}

pub struct ExchangeFinished<'a> {
    pub request_id: &'a str,
    pub api: &'static str,
    pub model: &'a str,
    pub provider: &'a str,
    pub status: u16,
    pub outcome: &'static str,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// The provider reported no usage; token limits were settled on an estimate.
    pub usage_estimated: bool,
    pub bytes: usize,
    pub elapsed_ms: u64,
}

impl ExchangeFinished<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "halberd::exchange",
            request_id = self.request_id,
            api = self.api,
            model = self.model,
            provider = self.provider,
            status = self.status,
            outcome = self.outcome,
            input_tokens = self.input_tokens,
            output_tokens = self.output_tokens,
            usage_estimated = self.usage_estimated,
            bytes = self.bytes,
            elapsed_ms = self.elapsed_ms,
            "exchange finished"
        );
    }
}

pub struct UpstreamFailed<'a> {
    pub request_id: &'a str,
    pub provider: &'a str,
    pub status: u16,
}

impl UpstreamFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(target: "halberd::upstream", request_id = self.request_id, provider = self.provider, status = self.status, "upstream returned an error");
    }
}

pub struct AdminAction<'a> {
    pub action: &'a str,
    pub key_id: &'a str,
    pub actor: &'a str,
}

impl AdminAction<'_> {
    pub fn emit(&self) {
        tracing::info!(target: "halberd::admin", action = self.action, key_id = self.key_id, actor = self.actor, "admin action");
    }
}

/// A guard found something: which guard, the finding type and the action, or a
/// summary of counts. Never the value.
pub struct GuardTriggered<'a> {
    pub request_id: &'a str,
    pub guard: &'static str,
    /// Finding types (`email`, `secret:npm_token`), with counts and actions.
    pub kind: &'a str,
    pub action: &'a str,
}

impl GuardTriggered<'_> {
    pub fn emit(&self) {
        tracing::info!(target: "halberd::guard", request_id = self.request_id, guard = self.guard, kind = self.kind, action = self.action, "guard triggered");
        crate::metrics::guard_action(self.guard, self.action);
    }
}

/// A per-key limit refused a request.
pub struct LimitHit<'a> {
    pub request_id: &'a str,
    pub key_id: &'a str,
    /// `rpm`, `budget_usd_daily`, ...
    pub limit: &'static str,
    /// `key` or `user`.
    pub scope: &'static str,
}

impl LimitHit<'_> {
    pub fn emit(&self) {
        tracing::warn!(target: "halberd::limits", request_id = self.request_id, key_id = self.key_id, limit = self.limit, scope = self.scope, "limit hit");
        crate::metrics::limit_refusal(self.limit, self.scope);
    }
}
