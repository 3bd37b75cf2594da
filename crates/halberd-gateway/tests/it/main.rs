//! Integration tests of the gateway over real sockets: a real gateway, the mock
//! upstream over real HTTP or in-process, and reqwest as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod budgets;
mod edge;
mod endpoints;
mod errors;
mod injection;
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

/// POSTs until the answer is 200, at most `tries` times 20 ms apart (for what
/// another task or replica gives back); returns the last status.
pub async fn post_until_ok(url: &str, key: &str, body: Value, tries: usize) -> u16 {
    let mut status = 0;
    for _ in 0..tries {
        status = post(url, key, body.clone()).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    status
}
