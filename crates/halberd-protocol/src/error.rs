//! The one error of request decoding: what is wrong and where.

use std::fmt;

/// A request body that cannot be decoded. `param` is the path of the offending
/// field in the provider's own notation (`messages[0].role`), so that the error
/// we return reads like the provider's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub param: Option<String>,
    pub message: String,
}

impl DecodeError {
    pub fn at(param: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn body(message: impl Into<String>) -> Self {
        DecodeError {
            param: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DecodeError {}
