//! Key lifecycle: issue, list, update, rotate with a grace period, revoke, and
//! authenticate. The CLI and the admin API both go through here, so they cannot
//! drift apart, and every change is recorded as an [`AdminEvent`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use halberd_guard::halberd_key::{self, ID_LEN, SECRET_LEN};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{AuthError, Pepper, Store, StoreError, Usd};

/// What the store knows of a key. Never contains the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub user: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The key that replaced this one by rotation.
    pub rotated_to: Option<String>,
    /// Public model names this key may use; empty means all.
    pub allowed_models: Vec<String>,
    /// Endpoints this key may call (`chat_completions`, `responses`,
    /// `embeddings`, `messages`, `models`); empty means all.
    pub allowed_endpoints: Vec<String>,
    pub policy: Option<String>,
    pub metadata: Value,
    pub limits: KeyLimits,
}

/// Limits on one key (or one user), enforced by the gateway's admit stage.
/// `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Requests per day (a rolling 24 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Tokens per minute (prompt plus maximum output, reserved before the
    /// upstream call and settled against reported usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    /// Tokens per day (a rolling 24 hours), reserved and settled like `tpm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpd: Option<u64>,
    /// Tokens per UTC calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens_daily: Option<u64>,
    /// Tokens per UTC calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens_monthly: Option<u64>,
    /// Spend per UTC calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd_daily: Option<Usd>,
    /// Spend per UTC calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd_monthly: Option<Usd>,
}

impl KeyLimits {
    /// Applies a change: each `Some` replaces the limit; zero removes it.
    pub fn apply(&mut self, change: &KeyLimits) {
        fn merge<T: Copy + PartialEq + Default>(current: &mut Option<T>, new: Option<T>) {
            if let Some(n) = new {
                *current = (n != T::default()).then_some(n);
            }
        }
        merge(&mut self.rps, change.rps);
        merge(&mut self.rpm, change.rpm);
        merge(&mut self.rpd, change.rpd);
        merge(&mut self.max_concurrent, change.max_concurrent);
        merge(&mut self.tpm, change.tpm);
        merge(&mut self.tpd, change.tpd);
        merge(&mut self.budget_tokens_daily, change.budget_tokens_daily);
        merge(
            &mut self.budget_tokens_monthly,
            change.budget_tokens_monthly,
        );
        merge(&mut self.budget_usd_daily, change.budget_usd_daily);
        merge(&mut self.budget_usd_monthly, change.budget_usd_monthly);
    }

    pub fn is_empty(&self) -> bool {
        *self == KeyLimits::default()
    }

    /// Whether any limit counts tokens or money, which needs the prompt counted
    /// and the output capped before the upstream call.
    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some()
            || self.tpd.is_some()
            || self.budget_tokens_daily.is_some()
            || self.budget_tokens_monthly.is_some()
            || self.has_cost_budget()
    }

    pub fn has_cost_budget(&self) -> bool {
        self.budget_usd_daily.is_some() || self.budget_usd_monthly.is_some()
    }
}

impl KeyRecord {
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }

    pub fn allows_endpoint(&self, endpoint: &str) -> bool {
        self.allowed_endpoints.is_empty() || self.allowed_endpoints.iter().any(|e| e == endpoint)
    }
}

/// Attributes of a key to create.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: String,
    pub user: Option<String>,
    pub expires_at: Option<i64>,
    pub allowed_models: Vec<String>,
    pub allowed_endpoints: Vec<String>,
    pub policy: Option<String>,
    pub metadata: Option<Value>,
    pub limits: KeyLimits,
}

/// Changes to a key; `None` leaves an attribute as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub user: Option<Option<String>>,
    pub expires_at: Option<Option<i64>>,
    pub allowed_models: Option<Vec<String>>,
    pub allowed_endpoints: Option<Vec<String>>,
    pub policy: Option<Option<String>>,
    pub metadata: Option<Value>,
    /// Limits to set (`Some(0)` removes one); `None` fields stay as they are.
    pub limits: Option<KeyLimits>,
}

/// A freshly issued key: the record, and the secret, which exists only here.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The whole key, to give to the client. Shown once.
    pub key: String,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminEvent {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub key_id: Option<String>,
    pub detail: Value,
}

/// Endpoint names a key can be scoped to.
pub const ENDPOINTS: [&str; 5] = [
    "chat_completions",
    "responses",
    "embeddings",
    "messages",
    "models",
];

/// Keys over a store, hashed under a pepper.
#[derive(Clone, Debug)]
pub struct Keyring {
    store: Store,
    pepper: Pepper,
    cache: Arc<KeyCache>,
}

/// Recently read key records with their stored hashes, so that a busy key costs
/// one HMAC per request instead of a database read. An entry is trusted for
/// `ttl` only: that is how long a change made by another process (the CLI,
/// another replica) can take to be seen. Changes made through this keyring
/// (the admin API) evict the entry at once. Expiry is always checked against
/// the current time, never cached.
///
/// A busy key never waits on the store: once an entry is half its `ttl` old,
/// the next authentication starts one background read that replaces it, and
/// keeps using the entry meanwhile; only an entry past its `ttl` (a key idle
/// that long, or a store slower than half the `ttl`) is read on the request
/// path. So the revocation bound stays `ttl`.
///
/// While the store is unreachable, an entry past its `ttl` is still served for
/// `stale_if_error` more (as Kong's `db_resurrect_ttl`): a store blip of a few
/// seconds would otherwise refuse every key, since the `ttl` is short. What
/// this risks is narrow: a change made elsewhere within `ttl` before the store
/// went away is seen when it is back (no change can be made while it is away),
/// and expiry is still checked against the clock.
#[derive(Debug)]
struct KeyCache {
    ttl: Duration,
    stale_if_error: Duration,
    entries: RwLock<HashMap<String, CachedKey>>,
    /// Bumped by every eviction. A read that began before an eviction must
    /// not put what it read back (it may be the record from before the
    /// change that caused the eviction).
    evictions: std::sync::atomic::AtomicU64,
    /// Key reads made on the request path (cache misses).
    misses: std::sync::atomic::AtomicU64,
    /// User limits, read at the same interval.
    users: RwLock<HashMap<String, (Instant, KeyLimits)>>,
}

#[derive(Debug)]
struct CachedKey {
    read_at: Instant,
    record: KeyRecord,
    hash: Vec<u8>,
    /// A background read of this entry is under way.
    refreshing: std::sync::atomic::AtomicBool,
}

/// Most entries the cache holds; past that it starts over.
const KEY_CACHE_MAX: usize = 100_000;

impl Keyring {
    /// A keyring that reads the store on every authentication.
    pub fn new(store: Store, pepper: Pepper) -> Keyring {
        Keyring::with_cache(store, pepper, Duration::ZERO)
    }

    /// A keyring that trusts what it read for `ttl` (zero: no cache).
    pub fn with_cache(store: Store, pepper: Pepper, ttl: Duration) -> Keyring {
        Keyring {
            store,
            pepper,
            cache: Arc::new(KeyCache {
                ttl,
                stale_if_error: Duration::ZERO,
                entries: RwLock::new(HashMap::new()),
                evictions: std::sync::atomic::AtomicU64::new(0),
                misses: std::sync::atomic::AtomicU64::new(0),
                users: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Serves cached keys for `stale` past their TTL while the store is
    /// unreachable (see [`KeyCache`]); zero refuses them (fail closed).
    #[must_use]
    pub fn with_stale_if_error(mut self, stale: Duration) -> Keyring {
        if let Some(cache) = Arc::get_mut(&mut self.cache) {
            cache.stale_if_error = stale;
        }
        self
    }

    /// Checks that this keyring hashes under the pepper the store's keys were
    /// hashed under, recording the pepper's fingerprint on first use. Replicas
    /// with different peppers would otherwise refuse each other's keys as
    /// `invalid_api_key`, silently.
    pub async fn check_pepper(&self) -> Result<(), StoreError> {
        let mut mac = self.mac();
        mac.update(b"halberd pepper fingerprint v1");
        let mine: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let stored = self
            .store
            .meta_or_insert("pepper_fingerprint", &mine)
            .await?;
        if stored == mine {
            Ok(())
        } else {
            Err(StoreError::Pepper(
                "this store's keys were hashed under a different pepper: every replica (and the CLI) must use the same one; set HALBERD_PEPPER to the same value everywhere, or use the pepper file that created the store (to start over with a new pepper, which makes every existing key invalid, delete the row 'pepper_fingerprint' of the table store_meta)".into(),
            ))
        }
    }

    /// How many authentications read the key from the store while the caller
    /// waited (cache misses), since this keyring was made.
    pub fn request_path_reads(&self) -> u64 {
        self.cache.misses.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long a change made elsewhere can take to be seen here.
    pub fn cache_ttl(&self) -> Duration {
        self.cache.ttl
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn create(
        &self,
        spec: KeySpec,
        actor: &str,
        now: i64,
    ) -> Result<IssuedKey, StoreError> {
        validate_name(&spec.name)?;
        validate_scopes(&spec.allowed_models, &spec.allowed_endpoints)?;
        if spec.expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Invalid {
                field: "expires",
                reason: "must be in the future".into(),
            });
        }
        let metadata = spec.metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(StoreError::Invalid {
                field: "metadata",
                reason: "must be a JSON object".into(),
            });
        }
        let (id, key) = new_key()?;
        let mut record = KeyRecord {
            id,
            name: spec.name,
            user: spec.user,
            created_at: now,
            expires_at: spec.expires_at,
            revoked_at: None,
            rotated_to: None,
            allowed_models: spec.allowed_models,
            allowed_endpoints: spec.allowed_endpoints,
            policy: spec.policy,
            metadata,
            limits: KeyLimits::default(),
        };
        record.limits.apply(&spec.limits);
        self.store.insert_key(&record, &self.hash(&key)).await?;
        self.record(
            actor,
            "key.create",
            &record.id,
            json!({"name": record.name, "user": record.user}),
            now,
        )
        .await?;
        Ok(IssuedKey { record, key })
    }

    pub async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.list_keys().await
    }

    pub async fn get(&self, id: &str) -> Result<KeyRecord, StoreError> {
        Ok(self
            .store
            .key_with_hash(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?
            .0)
    }

    pub async fn update(
        &self,
        id: &str,
        change: KeyUpdate,
        actor: &str,
        now: i64,
    ) -> Result<KeyRecord, StoreError> {
        let mut k = self.get(id).await?;
        let mut changed = Vec::new();
        if let Some(name) = change.name {
            validate_name(&name)?;
            k.name = name;
            changed.push("name");
        }
        if let Some(user) = change.user {
            k.user = user;
            changed.push("user");
        }
        if let Some(expires) = change.expires_at {
            if let Some(successor) = &k.rotated_to {
                return Err(StoreError::Invalid {
                    field: "expires",
                    reason: format!(
                        "key {id} was rotated to {successor}; its expiry is the end of its grace period"
                    ),
                });
            }
            k.expires_at = expires;
            changed.push("expires_at");
        }
        if let Some(models) = change.allowed_models {
            k.allowed_models = models;
            changed.push("allowed_models");
        }
        if let Some(endpoints) = change.allowed_endpoints {
            k.allowed_endpoints = endpoints;
            changed.push("allowed_endpoints");
        }
        if let Some(policy) = change.policy {
            k.policy = policy;
            changed.push("policy");
        }
        if let Some(metadata) = change.metadata {
            if !metadata.is_object() {
                return Err(StoreError::Invalid {
                    field: "metadata",
                    reason: "must be a JSON object".into(),
                });
            }
            k.metadata = metadata;
            changed.push("metadata");
        }
        if let Some(limits) = change.limits {
            k.limits.apply(&limits);
            changed.push("limits");
        }
        validate_scopes(&k.allowed_models, &k.allowed_endpoints)?;
        if !self.store.update_key(&k).await? {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        self.record(actor, "key.update", id, json!({"fields": changed}), now)
            .await?;
        Ok(k)
    }

    /// Issues a successor with the same attributes. The old key stays valid for
    /// `grace_secs` more (never longer than it would have anyway), then expires.
    pub async fn rotate(
        &self,
        id: &str,
        grace_secs: i64,
        actor: &str,
        now: i64,
    ) -> Result<IssuedKey, StoreError> {
        if grace_secs < 0 {
            return Err(StoreError::Invalid {
                field: "grace",
                reason: "must not be negative".into(),
            });
        }
        let mut old = self.get(id).await?;
        if old.revoked_at.is_some() {
            return Err(StoreError::Revoked(id.to_owned()));
        }
        // A rotated key's record carries its grace end as its expiry, and a
        // key past its expiry is dead: a successor of either would inherit
        // the wrong expiry. The live key to rotate is the successor.
        if let Some(successor) = &old.rotated_to {
            return Err(StoreError::Invalid {
                field: "key",
                reason: format!(
                    "key {id} was already rotated to {successor}; rotate {successor} instead"
                ),
            });
        }
        if old.expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Invalid {
                field: "key",
                reason: format!("key {id} has expired; create a new key instead"),
            });
        }
        let (new_id, key) = new_key()?;
        let new = KeyRecord {
            id: new_id,
            created_at: now,
            rotated_to: None,
            ..old.clone()
        };
        let grace_end = now.saturating_add(grace_secs);
        old.expires_at = Some(old.expires_at.map_or(grace_end, |e| e.min(grace_end)));
        old.rotated_to = Some(new.id.clone());
        self.store.rotate(&old, &new, &self.hash(&key)).await?;
        self.record(
            actor,
            "key.rotate",
            id,
            json!({"successor": new.id, "old_key_valid_until": old.expires_at}),
            now,
        )
        .await?;
        Ok(IssuedKey { record: new, key })
    }

    /// Revokes a key for good: no later update, rotation or race brings it
    /// back, and a second revocation keeps the first one's time.
    pub async fn revoke(&self, id: &str, actor: &str, now: i64) -> Result<KeyRecord, StoreError> {
        if !self.store.revoke_key(id, now).await? {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        self.record(actor, "key.revoke", id, json!({}), now).await?;
        self.get(id).await
    }

    /// Checks a presented key: shape and checksum, then the stored HMAC in
    /// constant time, then revocation and expiry.
    pub async fn authenticate(&self, presented: &str, now: i64) -> Result<KeyRecord, AuthError> {
        let parsed = halberd_key::parse_key(presented).ok_or(AuthError::Malformed)?;
        let (record, stored) = match self.cached(parsed.id) {
            Some(hit) => hit,
            None => {
                self.cache
                    .misses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let generation = self.generation();
                match self.store.key_with_hash(parsed.id).await {
                    Ok(found) => {
                        let found = found.ok_or(AuthError::Unknown)?;
                        self.remember(&found.0, &found.1, generation);
                        found
                    }
                    // The store went away while we asked: what we had, if
                    // not too old.
                    Err(e) => match self.stale(parsed.id) {
                        Some(hit) if self.store.is_down() => hit,
                        _ => return Err(e.into()),
                    },
                }
            }
        };
        let mut mac = self.mac();
        mac.update(presented.as_bytes());
        mac.verify_slice(&stored).map_err(|_| AuthError::Mismatch)?;
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        Ok(record)
    }

    pub async fn events(&self, limit: i64) -> Result<Vec<AdminEvent>, StoreError> {
        self.store.events(limit).await
    }

    /// The limits of `user`, across all of that user's keys; read through the
    /// cache, so a change made elsewhere takes up to the cache TTL to apply.
    pub async fn user_limits(&self, user: &str) -> Result<KeyLimits, StoreError> {
        if !self.cache.ttl.is_zero() {
            let users = self
                .cache
                .users
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((read_at, limits)) = users.get(user)
                && read_at.elapsed() < self.cache.ttl
            {
                return Ok(*limits);
            }
        }
        let limits = match self.store.user_limits(user).await {
            Ok(limits) => limits,
            Err(e) if self.store.is_down() => {
                // As for keys: what we had, for a while, while the store is away.
                let users = self
                    .cache
                    .users
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                return match users.get(user) {
                    Some((read_at, limits))
                        if read_at.elapsed() < self.cache.ttl + self.cache.stale_if_error =>
                    {
                        Ok(*limits)
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        if !self.cache.ttl.is_zero() {
            let mut users = self
                .cache
                .users
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if users.len() >= KEY_CACHE_MAX {
                users.clear();
            }
            users.insert(user.to_owned(), (Instant::now(), limits));
        }
        Ok(limits)
    }

    /// Changes the limits of `user` (`Some(0)` removes one) and records who did.
    pub async fn set_user_limits(
        &self,
        user: &str,
        change: &KeyLimits,
        actor: &str,
        now: i64,
    ) -> Result<KeyLimits, StoreError> {
        validate_user(user)?;
        let mut limits = self.store.user_limits(user).await?;
        limits.apply(change);
        self.store.set_user_limits(user, &limits, now).await?;
        self.cache
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(user);
        let event = AdminEvent {
            at: now,
            actor: actor.to_owned(),
            action: "user.limits".to_owned(),
            key_id: None,
            detail: json!({"user": user, "limits": limits}),
        };
        self.store.record_event(&event).await?;
        Ok(limits)
    }

    /// The cached record and hash of key `id`, if still trusted; starts a
    /// background refresh when the entry is half its `ttl` old.
    fn cached(&self, id: &str) -> Option<(KeyRecord, Vec<u8>)> {
        use std::sync::atomic::Ordering;
        if self.cache.ttl.is_zero() {
            return None;
        }
        let entries = self
            .cache
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = entries.get(id)?;
        let age = hit.read_at.elapsed();
        if age >= self.cache.ttl {
            // Past its ttl: read again, unless the store is known to be away
            // or the background read begun at ttl/2 has not come back (a
            // store that hangs: requests would otherwise all wait for its
            // timeout, 5 s in a fault soak); then, for a while, what we had.
            let away = self.store.is_down() || hit.refreshing.load(Ordering::Acquire);
            return (away && age < self.cache.ttl + self.cache.stale_if_error)
                .then(|| (hit.record.clone(), hit.hash.clone()));
        }
        if age >= self.cache.ttl / 2
            && !hit.refreshing.swap(true, Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let keyring = self.clone();
            let id = id.to_owned();
            let generation = self.generation();
            runtime.spawn(async move {
                match keyring.store.key_with_hash(&id).await {
                    Ok(Some((record, hash))) => keyring.remember(&record, &hash, generation),
                    // Gone from the store: the next request reads it and
                    // gets the answer on the request path.
                    Ok(None) => keyring.forget(&id),
                    // The entry ages out at its ttl as usual, and the next
                    // use starts another read.
                    Err(_) => keyring.refresh_failed(&id),
                }
            });
        }
        Some((hit.record.clone(), hit.hash.clone()))
    }

    /// A background read of `id` failed: the next use may start another.
    fn refresh_failed(&self, id: &str) {
        let entries = self
            .cache
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = entries.get(id) {
            hit.refreshing
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// The cached entry of `id` if within `ttl + stale_if_error`.
    fn stale(&self, id: &str) -> Option<(KeyRecord, Vec<u8>)> {
        let entries = self
            .cache
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = entries.get(id)?;
        (hit.read_at.elapsed() < self.cache.ttl + self.cache.stale_if_error)
            .then(|| (hit.record.clone(), hit.hash.clone()))
    }

    fn generation(&self) -> u64 {
        self.cache
            .evictions
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches what a read that began at eviction `generation` found, unless an
    /// eviction happened since.
    fn remember(&self, record: &KeyRecord, hash: &[u8], generation: u64) {
        if self.cache.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .cache
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the lock that `forget` takes to evict.
        if self.generation() != generation {
            return;
        }
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            record.id.clone(),
            CachedKey {
                read_at: Instant::now(),
                record: record.clone(),
                hash: hash.to_vec(),
                refreshing: std::sync::atomic::AtomicBool::new(false),
            },
        );
    }

    fn forget(&self, id: &str) {
        if !self.cache.ttl.is_zero() {
            let mut entries = self
                .cache
                .entries
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries.remove(id);
            self.cache
                .evictions
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    async fn record(
        &self,
        actor: &str,
        action: &str,
        key_id: &str,
        detail: Value,
        now: i64,
    ) -> Result<(), StoreError> {
        // Every change goes through here: drop what we cached of the key.
        self.forget(key_id);
        let event = AdminEvent {
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            key_id: Some(key_id.to_owned()),
            detail,
        };
        self.store.record_event(&event).await
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail; the fallback
        // keeps the function total without an unwrap.
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.pepper.bytes())
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
    }

    fn hash(&self, key: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

fn validate_user(user: &str) -> Result<(), StoreError> {
    if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "user",
            reason: "must be 1 to 200 characters, without control characters".into(),
        });
    }
    Ok(())
}

fn new_key() -> Result<(String, String), StoreError> {
    // Twice the bytes needed, so that rejection sampling (which drops 8 of
    // every 256 values) practically never runs short; if it does, draw again.
    for _ in 0..4 {
        let mut random = [0u8; 2 * (ID_LEN + SECRET_LEN)];
        getrandom::fill(&mut random).map_err(|_| StoreError::Random)?;
        let (a, b) = random.split_at(2 * ID_LEN);
        if let (Some(id), Some(secret)) = (
            halberd_key::base62_from_random(a, ID_LEN),
            halberd_key::base62_from_random(b, SECRET_LEN),
        ) {
            let key = halberd_key::format_key(&id, &secret);
            return Ok((id, key));
        }
    }
    Err(StoreError::Random)
}

fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "name",
            reason: "must be 1 to 200 printable characters".into(),
        });
    }
    Ok(())
}

fn validate_scopes(models: &[String], endpoints: &[String]) -> Result<(), StoreError> {
    if let Some(m) = models.iter().find(|m| m.trim().is_empty()) {
        return Err(StoreError::Invalid {
            field: "models",
            reason: format!("empty model name {m:?}"),
        });
    }
    if let Some(e) = endpoints.iter().find(|e| !ENDPOINTS.contains(&e.as_str())) {
        return Err(StoreError::Invalid {
            field: "endpoints",
            reason: format!(
                "unknown endpoint {e:?}; expected one of {}",
                ENDPOINTS.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
