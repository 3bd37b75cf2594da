//! Stage 2, decode: the raw body in, the JSON tree and its [`Exchange`] out.
//!
//! The body is checked for media type, nesting depth and syntax before anything
//! reads it; errors say what is wrong and where (line and column, or the
//! parameter path in the provider's notation). The tree is kept whole and is
//! what gets forwarded, so fields we do not model pass through unchanged.

use http::HeaderMap;
use serde_json::Value;

use halberd_protocol::{Api, Exchange, json};

use crate::error::GatewayError;

pub fn decode(
    api: Api,
    headers: &HeaderMap,
    body: &[u8],
    max_depth: usize,
) -> Result<(Value, Exchange), GatewayError> {
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json")
            && !essence.to_ascii_lowercase().ends_with("+json")
        {
            return Err(GatewayError::UnsupportedMediaType);
        }
    }
    let value = json::parse_body(body, max_depth)?;
    let exchange = Exchange::decode(api, &value)?;
    Ok((value, exchange))
}
