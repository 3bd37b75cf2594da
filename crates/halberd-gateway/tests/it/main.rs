//! Integration tests of the gateway over real sockets: a real gateway, the mock
//! upstream over real HTTP or in-process, and reqwest as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod edge;
mod endpoints;
mod errors;
mod limits;
mod limits_redis;
mod passthrough;
mod sensitive;

use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// POSTs JSON with a bearer key.
pub async fn post(url: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}
