//! The life of a request, one stage per module, in the order they run:
//!
//! 1. [`authenticate`]: the presented key → the key's record (the principal).
//! 2. [`admit`]: per-key request-rate and concurrency limits → a permit held
//!    until the exchange ends, or a 429.
//! 3. [`decode`]: the body (read within the body timeout) → a JSON tree and
//!    its [`halberd_protocol::Exchange`]; then the policy's size and shape
//!    limits and its tool rules ([`tool_policy`]: tools a request may not
//!    declare), before any detector runs.
//! 4. [`inspect_injection`]: every part scored for prompt injection at its
//!    trust level → the request refused, or flagged parts reported; then
//!    [`inspect_input`]: hidden characters (tag characters, bidi controls)
//!    removed by the policy's `sanitize`, then PII and secrets in every part
//!    and in every other string of the body → the body rewritten by the
//!    key's policy, or the request refused (bodies of 64 KiB and more on the blocking pool).
//! 5. [`route`]: the requested model → provider and upstream model id; then
//!    the policy's prompt-token limit, counted with that model's tokenizer.
//! 6. [`admit`] again, for keys with a token limit: prompt tokens (counted for
//!    the routed model) plus the output cap → a reservation settled when the
//!    exchange ends, or a 429.
//! 7. [`forward`]: the upstream call, streamed when the client streams, after a
//!    place for its usage record is reserved in the ledger (503 when full).
//! 8. [`inspect_output`]: the response, whole or streamed, redacted by the
//!    key's output policy, with input pseudonyms restored (run by `forward` and
//!    the streaming relay); before it, the answer's tool calls against the
//!    request's declared tools ([`tool_policy`]) and its text against the JSON
//!    schema the request asked for ([`output_schema`]).
//!
//! [`finish`] is the finaliser: a guard created when a request reaches the
//! upstream, which records how the exchange ended however it ends (answered,
//! failed, or abandoned by the client mid-stream), gives the concurrency slot
//! back and settles the token reservation. Accounting and the audit trail will
//! hang off the same guard.

pub mod admit;
pub mod authenticate;
pub mod decode;
pub mod finish;
pub mod forward;
pub mod inspect_injection;
pub mod inspect_input;
pub mod inspect_output;
pub mod output_schema;
pub mod route;
pub mod tool_policy;
pub mod tool_rules;

/// What the stages share about one request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub dialect: crate::error::Dialect,
    pub started: tokio::time::Instant,
}
