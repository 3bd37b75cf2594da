//! Detectors: pure functions from text to findings.
//!
//! This crate does no I/O, reads no clock and starts no task; every function in it
//! runs in time linear in its input. The gateway, the `halberd scan` CLI and the
//! benchmarks use it alike.

#[doc(hidden)]
pub mod fuzzing;
pub mod halberd_key;
pub mod injection;
pub mod sensitive;
pub mod tokens;
