//! Integration tests of the gateway over real sockets: a real gateway, the mock
//! upstream over real HTTP or in-process, and reqwest as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod budgets;
mod edge;
mod endpoints;
mod errors;
mod faults;
mod injection;
mod limits;
mod limits_redis;
mod links;
mod passthrough;
mod replicas;
mod sanitize;
mod schema;
mod sensitive;
mod tools;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A new key of `gw` under the named policy (the key is named after it);
/// its secret.
pub async fn policy_key(gw: &halberd_testkit::TestGateway, policy: &str) -> String {
    gw.key(halberd_store::KeySpec {
        name: policy.into(),
        policy: Some(policy.into()),
        ..halberd_store::KeySpec::default()
    })
    .await
    .key
}

/// A response's status and what it carried: the data of its events, one
/// per line, when it streamed, else its body.
pub async fn status_and_text(resp: reqwest::Response, stream: bool) -> (u16, String) {
    let status = resp.status().as_u16();
    let raw = if stream && status == 200 {
        halberd_testkit::sse_data(resp).await.join("\n")
    } else {
        resp.text().await.unwrap()
    };
    (status, raw)
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

/// A new key of `gw` with these limits; its secret.
pub async fn limited_key(
    gw: &halberd_testkit::TestGateway,
    name: &str,
    limits: halberd_store::KeyLimits,
) -> String {
    gw.key(halberd_store::KeySpec {
        name: name.into(),
        limits,
        ..halberd_store::KeySpec::default()
    })
    .await
    .key
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

/// A TCP relay to Redis or Postgres that can be cut and restored, to stop the
/// service without stopping the machine's shared server.
pub struct Switch {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl Switch {
    pub async fn start(target: &str) -> Switch {
        // `scheme://[user@]host:port[/path]`, or a bare `host:port`.
        let rest = target.split_once("://").map_or(target, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let target: SocketAddr = rest.split('/').next().unwrap().parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = watch => {} }
                });
            }
        });
        Switch { addr, up }
    }

    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}
