//! The usage ledger: how usage records leave the request path.
//!
//! An exchange never waits on a store write. Before it is forwarded it takes a
//! [`Slot`], room for its one record in a bounded queue; when it ends, its
//! finaliser puts the record in that slot, which cannot fail and does not
//! wait. One writer task drains the queue and writes what it finds in one
//! transaction (group commit), after lingering `LINGER` (5 ms) from a
//! batch's first record for more: a steady stream of exchanges becomes one
//! transaction every few milliseconds, not one each (a commit and two thread
//! hand-offs per record were a fifth of the gateway's CPU at one
//! connection), and under heavy load batches grow while the previous one is
//! written. Nothing waits on it: records are bookkeeping, limits and budgets
//! settle in the limiter. A batch holds at most one queue's worth.
//!
//! Nothing admitted is lost: a batch the store refuses is kept and retried
//! (with backoff) until it is written, and the slots it holds keep the queue
//! full. When the queue is full (the store is down or far too slow), new
//! exchanges wait up to `wait` for room and are then refused with 503 and
//! `Retry-After`, rather than dropping records or growing without bound. On
//! shutdown the queue is closed and drained within the grace period.
//!
//! It must never hold a record's text beyond what the usage record carries:
//! ids, model names, counts, cost and outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use halberd_store::{Store, UsageRecord};
use tokio::sync::{Notify, mpsc};

use crate::error::GatewayError;

/// Most records one transaction writes.
/// How long the writer waits after a batch's first record for more.
const LINGER: Duration = Duration::from_millis(5);

const BATCH_MAX: usize = 2048;

/// Backoff after a failed write: from this, doubling, up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The queue of usage records and its writer.
#[derive(Debug)]
pub struct Ledger {
    tx: mpsc::Sender<UsageRecord>,
    wait: Duration,
    close: Arc<Notify>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The last write failed and none has succeeded since.
    failing: Arc<AtomicBool>,
}

/// Room for one usage record, reserved before the exchange is forwarded.
#[derive(Debug)]
pub struct Slot(mpsc::OwnedPermit<UsageRecord>);

impl Slot {
    /// Puts the record in the queue; never fails and never waits.
    pub fn record(self, record: UsageRecord) {
        self.0.send(record);
    }
}

impl Ledger {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store, capacity: usize, wait: Duration) -> Ledger {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let close = Arc::new(Notify::new());
        let failing = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write(
            store,
            rx,
            capacity.clamp(1, BATCH_MAX),
            close.clone(),
            failing.clone(),
        ));
        Ledger {
            tx,
            wait,
            close,
            writer: std::sync::Mutex::new(Some(writer)),
            failing,
        }
    }

    /// Room for one record: at once while the queue has room, else after up
    /// to the configured wait, else 503.
    pub async fn reserve(&self, request_id: &str) -> Result<Slot, GatewayError> {
        if let Ok(permit) = self.tx.clone().try_reserve_owned() {
            return Ok(Slot(permit));
        }
        let refused = || {
            tracing::warn!(
                target: "halberd::usage",
                request_id,
                "usage queue full (the store is slow or unreachable); request refused"
            );
            GatewayError::Unavailable {
                message: "the gateway cannot record usage right now; retry shortly".into(),
            }
        };
        match tokio::time::timeout(self.wait, self.tx.clone().reserve_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            Ok(Err(_)) | Err(_) => Err(refused()),
        }
    }

    /// Records waiting to be written (not counting reserved slots).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the last write failed (for `/readyz`).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Stops taking new records and waits until every reserved slot has been
    /// recorded and written, or until `deadline`. Returns whether everything
    /// was written.
    pub async fn close(&self, deadline: tokio::time::Instant) -> bool {
        self.close.notify_one();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        let Some(writer) = writer else {
            return true;
        };
        match tokio::time::timeout_at(deadline, writer).await {
            Ok(_) => true,
            Err(_) => {
                tracing::error!(
                    target: "halberd::usage",
                    queued = self.queued(),
                    "shutdown grace over with usage records not yet written"
                );
                false
            }
        }
    }
}

/// The writer: batches of what is queued, each written in one transaction,
/// retried until written.
async fn write(
    store: Store,
    mut rx: mpsc::Receiver<UsageRecord>,
    // The largest batch: never more than one queue's worth out of the queue,
    // so what waits in memory stays bounded by twice the queue.
    batch_max: usize,
    close: Arc<Notify>,
    failing: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(batch_max);
    let mut closing = false;
    loop {
        let n = if closing {
            rx.recv_many(&mut batch, batch_max).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, batch_max) => n,
                () = close.notified() => {
                    // Reserved slots may still be recorded; new ones are not
                    // given. `recv_many` returns 0 once all are in and read.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        if n == 0 {
            return;
        }
        // Linger a moment for company: a transaction per record cost more
        // than the record (a commit and two thread hand-offs to the store's
        // worker each); waiting LINGER after the first record of a batch
        // turns a steady stream of exchanges into one write every LINGER.
        // Records are bookkeeping (limits and budgets settle in the
        // limiter), so a few milliseconds later in the store is free.
        if !closing && batch.len() < batch_max {
            let more = async {
                while batch.len() < batch_max {
                    let room = batch_max - batch.len();
                    if rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, more).await;
        }
        let mut delay = RETRY_MIN;
        loop {
            match store.record_usage_batch(&batch).await {
                Ok(()) => {
                    if failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(target: "halberd::usage", "usage records are being written again");
                    }
                    break;
                }
                Err(e) => {
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            target: "halberd::usage",
                            error = %e,
                            records = batch.len(),
                            "cannot write usage records; keeping them and retrying"
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        batch.clear();
    }
}

/// Deletes usage records older than `retention`, at start and then every
/// hour, in batches of 10,000 so no transaction holds the store for long.
/// Budgets only read the current day and month, which the retention (at
/// least 32 days, checked in the configuration) always keeps.
pub async fn prune(store: Store, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let horizon = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = halberd_store::now_unix().saturating_sub(horizon);
        let mut deleted = 0u64;
        loop {
            match store.delete_usage_before(before, 10_000).await {
                Ok(0) => break,
                Ok(n) => {
                    deleted += n;
                    // Let the ledger's writer in between batches.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(target: "halberd::usage", error = %e, "cannot delete old usage records; retrying in an hour");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(target: "halberd::usage", deleted, "old usage records deleted");
        }
    }
}

#[cfg(test)]
mod tests;
