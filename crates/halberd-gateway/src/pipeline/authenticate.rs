//! Stage 1, authenticate: request headers in, the key's record out.
//!
//! The key comes from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key`
//! (Anthropic SDKs). Both at once with different values is refused rather than
//! guessed at. Hashing and the constant-time comparison live in the store's
//! keyring. On failure the client learns only invalid / expired / revoked; the
//! log line says which check failed and the key id, never the key.

use http::HeaderMap;

use halberd_store::{AuthError, KeyRecord, Keyring};

use crate::error::GatewayError;
use crate::events;

pub async fn authenticate(
    keyring: &Keyring,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<KeyRecord, GatewayError> {
    let presented = presented_key(headers)?;
    match keyring
        .authenticate(presented, halberd_store::now_unix())
        .await
    {
        Ok(record) => Ok(record),
        Err(e) => {
            let (reason, err) = match e {
                AuthError::Malformed => ("malformed", GatewayError::InvalidKey),
                AuthError::Unknown => ("unknown_id", GatewayError::InvalidKey),
                AuthError::Mismatch => ("secret_mismatch", GatewayError::InvalidKey),
                AuthError::Expired => ("expired", GatewayError::ExpiredKey),
                AuthError::Revoked => ("revoked", GatewayError::RevokedKey),
                AuthError::Store(e) => {
                    // A store known to be down was logged once, when it went
                    // away; one line per refused request would flood the log.
                    if matches!(e, halberd_store::StoreError::Unreachable) {
                        tracing::debug!(request_id, "key lookup refused: store unreachable");
                    } else {
                        tracing::error!(request_id, error = %e, "key lookup failed");
                    }
                    // Fail closed: no store, no access.
                    return Err(GatewayError::Unavailable {
                        message: "authentication is temporarily unavailable".into(),
                    });
                }
            };
            let key_id = halberd_guard::halberd_key::parse_key(presented).map(|k| k.id);
            events::KeyRejected {
                request_id,
                reason,
                key_id,
            }
            .emit();
            Err(err)
        }
    }
}

fn presented_key(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let bearer = headers.get(http::header::AUTHORIZATION).map(|v| {
        let s = v.to_str().unwrap_or_default().trim();
        let scheme = s.get(..7).unwrap_or_default();
        if scheme.eq_ignore_ascii_case("bearer ") {
            s[7..].trim()
        } else {
            ""
        }
    });
    let x_api_key = headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap_or_default().trim());
    match (bearer, x_api_key) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() && a != b => {
            Err(GatewayError::InvalidRequest {
                message: "two different API keys were sent (Authorization and x-api-key); send one"
                    .into(),
                param: None,
            })
        }
        (Some(k), _) | (None, Some(k)) if !k.is_empty() => Ok(k),
        (_, Some(k)) if !k.is_empty() => Ok(k),
        (Some(_), _) | (_, Some(_)) => Err(GatewayError::InvalidKey),
        (None, None) => Err(GatewayError::MissingKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn key_sources() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Bearer abc"),
                ("x-api-key", "abc")
            ]))
            .unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Bearer "),
                ("x-api-key", "abc")
            ]))
            .unwrap(),
            "abc"
        );
        assert_eq!(presented_key(&headers(&[])), Err(GatewayError::MissingKey));
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            Err(GatewayError::InvalidKey)
        );
        assert!(matches!(
            presented_key(&headers(&[
                ("authorization", "Bearer a"),
                ("x-api-key", "b")
            ])),
            Err(GatewayError::InvalidRequest { .. })
        ));
    }
}
