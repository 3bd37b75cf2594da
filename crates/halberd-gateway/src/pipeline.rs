//! The life of a request, one stage per module, in the order they run:
//!
//! 1. [`authenticate`]: the presented key → the key's record (the principal).
//! 2. [`admit`]: per-key rate and concurrency limits → a permit held until
//!    the exchange ends, or a 429.
//! 2. [`decode`]: the body → a JSON tree and its [`halberd_protocol::Exchange`].
//! 3. [`inspect_input`]: PII and secrets in every part → the body rewritten by
//!    the key's policy, or the request refused.
//! 4. [`route`]: the requested model → provider and upstream model id.
//! 5. [`forward`]: the upstream call, streamed when the client streams.
//! 6. [`inspect_output`]: the response, whole or streamed, redacted by the
//!    key's output policy, with input pseudonyms restored (run by `forward` and
//!    the streaming relay).
//!
//! [`finish`] is the finaliser: a guard created when a request reaches the
//! upstream, which records how the exchange ended however it ends (answered,
//! failed, or abandoned by the client mid-stream).
//!
//! Admission (limits, budgets), input and output inspection, accounting and the
//! audit trail slot in between these stages as they are built.

pub mod admit;
pub mod authenticate;
pub mod decode;
pub mod finish;
pub mod forward;
pub mod inspect_input;
pub mod inspect_output;
pub mod route;

/// What the stages share about one request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub dialect: crate::error::Dialect,
    pub started: tokio::time::Instant,
}
