//! Wire formats of the provider APIs Halberd speaks, and their conversion to one
//! internal [`Exchange`].
//!
//! This crate is pure: it takes bytes or JSON values and returns values. It never
//! does I/O, never spawns, never reads a clock. The gateway, the CLI and the
//! benchmarks call it alike.
//!
//! Request bodies stay JSON trees (`serde_json::Value`) from decoding to
//! forwarding. The decoders read the fields Halberd acts on and check their types,
//! but they never rebuild the body from a struct, so fields of a provider API that
//! we do not model are forwarded unchanged.

pub mod anthropic;
pub mod error;
pub mod exchange;
pub mod fuzzing;
pub mod json;
pub mod openai;
pub mod sse;

pub use error::DecodeError;
pub use exchange::{Api, Exchange, Part, PartKind, Provenance, Role};
