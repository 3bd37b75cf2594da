//! Stage 3, route: the requested model in, the provider and upstream model id out.
//!
//! The key's model allowlist is checked before the model's existence, so a key
//! cannot learn which models exist beyond those it may use. The client never
//! chooses the upstream URL or credentials: only the configuration does.

use halberd_protocol::{Api, Exchange};
use halberd_store::KeyRecord;

use crate::config::{Config, ProviderKind};
use crate::error::GatewayError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider: usize,
    pub upstream_model: String,
}

pub fn route(config: &Config, key: &KeyRecord, ex: &Exchange) -> Result<Route, GatewayError> {
    if !key.allows_model(&ex.model) {
        return Err(GatewayError::ModelNotAllowed {
            model: ex.model.clone(),
        });
    }
    // Exact names win over patterns; among patterns, the first configured.
    let m = config
        .models
        .iter()
        .find(|r| !r.is_pattern() && r.matches(&ex.model))
        .or_else(|| config.models.iter().find(|r| r.matches(&ex.model)))
        .ok_or_else(|| GatewayError::UnknownModel {
            model: ex.model.clone(),
        })?;
    let kind = config.providers[m.provider].kind;
    let served = match kind {
        ProviderKind::Mock => true,
        ProviderKind::Openai => ex.api != Api::Messages,
        ProviderKind::Anthropic => ex.api == Api::Messages,
    };
    if !served {
        return Err(GatewayError::ModelNotOnEndpoint {
            model: ex.model.clone(),
            endpoint: ex.api.as_str(),
        });
    }
    Ok(Route {
        provider: m.provider,
        upstream_model: m.upstream.clone().unwrap_or_else(|| ex.model.clone()),
    })
}
