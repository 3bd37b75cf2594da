//! The gateway's one error type and its one mapping to HTTP.
//!
//! Every error knows where it came from (the client, policy, the upstream, or
//! Halberd itself), its status and its stable `code`. [`GatewayError::respond`]
//! turns it into the caller's dialect: OpenAI's `{"error": {...}}` or
//! Anthropic's `{"type": "error", "error": {...}}`. Messages never carry
//! secrets, prompt text or internal details; internal errors are logged with
//! their cause and answered with a generic message.

use axum::response::{IntoResponse, Response};
use halberd_protocol::{anthropic, openai};
use http::{HeaderValue, StatusCode, header};

/// Which API's error shape the caller expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// Anthropic's paths and SDK headers say Anthropic; everything else is OpenAI.
    pub fn for_request(path: &str, headers: &http::HeaderMap) -> Dialect {
        // The endpoints say; elsewhere (models, an unknown path) the
        // Anthropic SDKs' `anthropic-version` header does, so that their
        // callers get errors they can parse.
        let openai_endpoint = matches!(
            path,
            "/v1/chat/completions" | "/v1/responses" | "/v1/embeddings"
        ) || path.starts_with("/v1/responses/");
        if path == "/v1/messages"
            || path.starts_with("/v1/messages/")
            || (!openai_endpoint && headers.contains_key("anthropic-version"))
        {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Policy,
    Upstream,
    Internal,
}

/// Why an answer that copies the operator's prompt was withheld.
pub const PROMPT_LEAK_MESSAGE: &str = "the response was withheld: it reproduced the operator's instructions, which this key's policy blocks";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The body is not valid JSON, or not the shape the API requires.
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The request head is not one the gateway takes (see [`crate::wire`]).
    Malformed {
        fault: crate::wire::Fault,
    },
    /// The client did not send its whole body in time.
    BodyTimeout,
    MissingKey,
    InvalidKey,
    ExpiredKey,
    RevokedKey,
    /// The key may not call this endpoint.
    EndpointNotAllowed {
        endpoint: &'static str,
    },
    ModelNotAllowed {
        model: String,
    },
    UnknownModel {
        model: String,
    },
    /// The model exists but its provider does not speak this API.
    ModelNotOnEndpoint {
        model: String,
        endpoint: &'static str,
    },
    BodyTooLarge {
        limit: usize,
    },
    /// The request head is over `[server] max_header_bytes` or `max_headers`.
    HeadersTooLarge {
        bytes: usize,
        fields: usize,
    },
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    /// The upstream answered with an error we do not pass through.
    Upstream {
        status: u16,
        message: String,
    },
    /// The upstream refused the gateway's own credentials.
    UpstreamAuth,
    UpstreamUnreachable,
    UpstreamTimeout,
    /// Admin API: no admin token configured, or a wrong one.
    AdminUnauthorized,
    AdminDisabled,
    KeyNotFound {
        id: String,
    },
    Conflict {
        message: String,
    },
    Unavailable {
        message: String,
    },
    /// The provider's answer held sensitive data whose output action is
    /// `block`: the answer was withheld. Not the client's fault (403, a
    /// policy decision, not 400), and not worth retrying.
    OutputBlocked {
        /// The finding type, never the value.
        kind: String,
    },
    /// The answer held a link or image that could carry data to another
    /// host, and the policy's action for it is `block`
    /// ([`halberd_guard::links`]). 403 like [`GatewayError::OutputBlocked`].
    OutputLink {
        /// `image:sentence`, `link:prompt_text`...: never the URL.
        kind: String,
    },
    /// The answer reproduced the share of the operator's prompt that the
    /// policy blocks ([`halberd_guard::leak`]). 403.
    PromptLeak,
    /// The model's answer called a tool the request did not declare, or with
    /// arguments that are not JSON (`pipeline::tool_policy`): withheld. 502:
    /// the upstream's answer is unusable, not the client's request.
    ToolCall {
        fault: crate::pipeline::tool_policy::ToolFault,
    },
    /// The answer is not JSON that the requested schema accepts, and the
    /// request asked for it strictly. 502: the upstream's answer is unusable.
    OutputSchema {
        violation: crate::pipeline::output_schema::Violation,
    },
    /// The request declares a tool its key's policy does not allow.
    ToolNotAllowed {
        tool: String,
    },
    /// A request part holds sensitive data whose policy action is `block`.
    SensitiveData {
        /// The finding type (`secret:aws_access_key_id`, `email`), never the value.
        kind: String,
        /// Where: the JSON Pointer of the part.
        at: String,
    },
    /// A request part scored above its block threshold for prompt injection.
    PromptInjection {
        /// Where: the JSON Pointer of the part.
        at: String,
        /// Who wrote the part: `user`, `tool`, `document`, `operator`.
        provenance: &'static str,
        /// The score in thousandths (a float has no `Eq`).
        score_milli: u16,
    },
    /// A per-key limit refused the request.
    RateLimited {
        /// Which limit: `requests per minute`, `concurrent requests`.
        what: String,
        /// The limit's short name (`rpm`) and whose it is (`key`, `user`):
        /// what logs record, naming no one.
        limit: &'static str,
        scope: &'static str,
        retry_after: std::time::Duration,
        rate: Option<crate::pipeline::admit::RateInfo>,
    },
    /// A token or cost budget of the key or its user would be exceeded.
    BudgetExceeded {
        /// `daily cost budget of this key`, `monthly token budget of user ann`.
        what: String,
        limit: &'static str,
        scope: &'static str,
        /// What the request needs and what is left, in the budget's unit.
        detail: String,
        /// Until the budget's period ends.
        retry_after: std::time::Duration,
    },
    /// A cost budget applies but the model has no price to count it with.
    ModelNotPriced {
        model: String,
    },
    /// A request exceeds a content limit of the key's policy.
    ContentLimit {
        what: &'static str,
        limit: u64,
        actual: u64,
    },
    /// The key names a policy the configuration does not define.
    PolicyNotFound {
        name: String,
    },
    /// Something that should not happen; details go to the log only.
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            InvalidRequest { .. }
            | ModelNotOnEndpoint { .. }
            | SensitiveData { .. }
            | PromptInjection { .. }
            | Malformed { .. }
            | ContentLimit { .. } => StatusCode::BAD_REQUEST,
            MissingKey | InvalidKey | ExpiredKey | RevokedKey | AdminUnauthorized => {
                StatusCode::UNAUTHORIZED
            }
            EndpointNotAllowed { .. }
            | ModelNotAllowed { .. }
            | OutputBlocked { .. }
            | OutputLink { .. }
            | PromptLeak
            | ToolNotAllowed { .. }
            | AdminDisabled
            | PolicyNotFound { .. } => StatusCode::FORBIDDEN,
            UnknownModel { .. } | NotFound | KeyNotFound { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Conflict { .. } => StatusCode::CONFLICT,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            BudgetExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            ModelNotPriced { .. } => StatusCode::FORBIDDEN,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // A call a policy rule blocks is a policy decision.
            ToolCall {
                fault: crate::pipeline::tool_policy::ToolFault::Blocked { .. },
            } => StatusCode::FORBIDDEN,
            Upstream { .. }
            | UpstreamAuth
            | UpstreamUnreachable
            | ToolCall { .. }
            | OutputSchema { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented code.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidRequest { .. } => "invalid_request",
            Malformed { .. } => "malformed_request",
            BodyTimeout => "request_timeout",
            MissingKey => "missing_api_key",
            InvalidKey => "invalid_api_key",
            ExpiredKey => "expired_api_key",
            RevokedKey => "revoked_api_key",
            EndpointNotAllowed { .. } => "endpoint_not_allowed",
            ModelNotAllowed { .. } => "model_not_allowed",
            UnknownModel { .. } => "model_not_found",
            ModelNotOnEndpoint { .. } => "model_not_supported_on_endpoint",
            BodyTooLarge { .. } => "request_too_large",
            HeadersTooLarge { .. } => "headers_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Upstream { .. } => "upstream_error",
            UpstreamAuth => "upstream_auth_failed",
            UpstreamUnreachable => "upstream_unreachable",
            UpstreamTimeout => "upstream_timeout",
            AdminUnauthorized => "invalid_admin_token",
            AdminDisabled => "admin_disabled",
            KeyNotFound { .. } => "key_not_found",
            Conflict { .. } => "conflict",
            Unavailable { .. } => "unavailable",
            SensitiveData { .. } | OutputBlocked { .. } => "sensitive_data_detected",
            ToolCall { fault } => fault.code(),
            ToolNotAllowed { .. } => "tool_not_allowed",
            OutputSchema { .. } => "output_schema_violation",
            OutputLink { .. } => "output_link_blocked",
            PromptLeak => "system_prompt_leaked",
            PromptInjection { .. } => "prompt_injection_detected",
            RateLimited { .. } => "rate_limited",
            BudgetExceeded { .. } => "budget_exceeded",
            ModelNotPriced { .. } => "model_not_priced",
            ContentLimit { .. } => "content_limit_exceeded",
            PolicyNotFound { .. } => "policy_not_found",
            Internal => "internal_error",
        }
    }

    pub fn origin(&self) -> Origin {
        use GatewayError::*;
        match self {
            EndpointNotAllowed { .. }
            | ModelNotAllowed { .. }
            | SensitiveData { .. }
            | OutputBlocked { .. }
            | OutputLink { .. }
            | PromptLeak
            | ToolCall { .. }
            | ToolNotAllowed { .. }
            | OutputSchema { .. }
            | PromptInjection { .. }
            | RateLimited { .. }
            | BudgetExceeded { .. }
            | ModelNotPriced { .. }
            | ContentLimit { .. }
            | PolicyNotFound { .. } => Origin::Policy,
            Upstream { .. } | UpstreamAuth | UpstreamUnreachable | UpstreamTimeout => {
                Origin::Upstream
            }
            Internal | Unavailable { .. } => Origin::Internal,
            _ => Origin::Client,
        }
    }

    pub fn message(&self) -> String {
        use GatewayError::*;
        match self {
            InvalidRequest { message, .. } => message.clone(),
            Malformed { fault } => fault.message().into(),
            MissingKey => {
                "no API key provided: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"
                    .into()
            }
            InvalidKey => "invalid API key".into(),
            ExpiredKey => "API key has expired".into(),
            RevokedKey => "API key has been revoked".into(),
            EndpointNotAllowed { endpoint } => {
                format!("this API key may not call the {endpoint} endpoint")
            }
            ModelNotAllowed { model } => format!("this API key may not use model '{model}'"),
            UnknownModel { model } => format!("the model '{model}' does not exist"),
            ModelNotOnEndpoint { model, endpoint } => {
                format!("the model '{model}' is not served on the {endpoint} endpoint")
            }
            BodyTooLarge { limit } => format!("request body exceeds the limit of {limit} bytes"),
            HeadersTooLarge { bytes, fields } => {
                format!("request headers exceed the limit of {bytes} bytes or {fields} fields")
            }
            UnsupportedMediaType => {
                "request body must be JSON (Content-Type: application/json)".into()
            }
            NotFound => "no such endpoint".into(),
            MethodNotAllowed => "method not allowed on this endpoint".into(),
            Upstream { status, message } => {
                format!("upstream provider returned an error (status {status}): {message}")
            }
            UpstreamAuth => "the upstream provider rejected the gateway's credentials".into(),
            UpstreamUnreachable => "the upstream provider could not be reached".into(),
            UpstreamTimeout => "the upstream provider did not answer in time".into(),
            AdminUnauthorized => "invalid or missing admin token".into(),
            AdminDisabled => {
                "the admin API is disabled: set the admin token environment variable and restart"
                    .into()
            }
            KeyNotFound { id } => format!("no key with id '{id}'"),
            Conflict { message } | Unavailable { message } => message.clone(),
            ToolCall { fault } => fault.message(),
            OutputSchema { violation } => violation.message(),
            ToolNotAllowed { tool } => format!(
                "this API key's policy does not allow the tool '{}'",
                crate::pipeline::tool_policy::shown(tool)
            ),
            PromptLeak => PROMPT_LEAK_MESSAGE.into(),
            OutputLink { kind } => format!(
                "the response was withheld: it contained a {kind} reference to another host, which this key's policy blocks"
            ),
            OutputBlocked { kind } => format!(
                "the response was withheld: it contained sensitive data ({kind}) that this key's policy blocks"
            ),
            SensitiveData { kind, at } => {
                format!("sensitive data ({kind}) at {at} is blocked by this key's policy")
            }
            PromptInjection {
                at,
                provenance,
                score_milli,
            } => format!(
                "possible prompt injection in {provenance} text at {at} (score {:.3}); \
                 this key's policy blocks it",
                f32::from(*score_milli) / 1000.0
            ),
            RateLimited {
                what, retry_after, ..
            } => format!(
                "rate limit reached for this API key ({what}); retry after {}",
                crate::pipeline::admit::reset_text(*retry_after)
            ),
            BudgetExceeded {
                detail,
                retry_after,
                ..
            } => format!(
                "budget exceeded: {detail}; it renews in {}",
                crate::pipeline::admit::reset_text(*retry_after)
            ),
            ModelNotPriced { model } => format!(
                "this API key has a cost budget, and the gateway has no price for model '{model}'; an operator must add it under [prices]"
            ),
            ContentLimit {
                what,
                limit,
                actual,
            } => format!(
                "this request has {actual} {what}; this key's policy allows at most {limit}"
            ),
            PolicyNotFound { name } => {
                format!("this API key's policy '{name}' is not configured on the gateway")
            }
            Internal => "internal error".into(),
            BodyTimeout => "the request body was not received in time".into(),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            GatewayError::UnknownModel { .. }
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::ModelNotOnEndpoint { .. } => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI `type` and the Anthropic `type` of this error.
    fn types(&self) -> (&'static str, &'static str) {
        match self.status() {
            StatusCode::UNAUTHORIZED => ("authentication_error", "authentication_error"),
            StatusCode::FORBIDDEN => ("permission_error", "permission_error"),
            StatusCode::NOT_FOUND => ("invalid_request_error", "not_found_error"),
            StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_error"),
            StatusCode::PAYMENT_REQUIRED => ("insufficient_quota", "billing_error"),
            StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::SERVICE_UNAVAILABLE => ("api_error", "api_error"),
            _ => ("invalid_request_error", "invalid_request_error"),
        }
    }

    /// The JSON error body in `dialect`.
    pub fn body(&self, dialect: Dialect, request_id: &str) -> serde_json::Value {
        let (oai_type, anthropic_type) = self.types();
        match dialect {
            Dialect::OpenAi => {
                openai::error_body(&self.message(), oai_type, self.code(), self.param())
            }
            Dialect::Anthropic => {
                anthropic::error_body(&self.message(), anthropic_type, self.code(), request_id)
            }
        }
    }

    /// The complete response in `dialect`.
    pub fn respond(&self, dialect: Dialect, request_id: &str) -> Response {
        let mut resp = (self.status(), axum::Json(self.body(dialect, request_id))).into_response();
        if self.status() == StatusCode::UNAUTHORIZED && dialect == Dialect::OpenAi {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"halberd\""),
            );
        }
        if let GatewayError::RateLimited {
            retry_after, rate, ..
        } = self
        {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            if let Some(rate) = rate {
                crate::pipeline::admit::set_rate_headers(resp.headers_mut(), rate, dialect);
            }
        }
        if let GatewayError::Unavailable { .. } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let GatewayError::BudgetExceeded { retry_after, .. } = self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        // Tell the SDKs not to retry what cannot succeed on retry (a rate limit
        // can: the SDKs honour Retry-After).
        // An upstream that refused the gateway's credentials refuses them
        // again: retrying cannot heal it.
        let retry = (matches!(self.origin(), Origin::Upstream | Origin::Internal)
            && !matches!(self, GatewayError::UpstreamAuth))
            || matches!(self, GatewayError::RateLimited { .. });
        resp.headers_mut().insert(
            "x-should-retry",
            HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
        resp
    }
}

impl From<halberd_protocol::DecodeError> for GatewayError {
    fn from(e: halberd_protocol::DecodeError) -> Self {
        GatewayError::InvalidRequest {
            message: e.to_string(),
            param: e.param,
        }
    }
}
