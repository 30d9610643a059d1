//! The etcd registry (Go Jupiter wire-compatible; layout in the module docs of `registry`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dubbo::{DubboService, DubboTarget};
use super::{
    AlsoRegister, Book, Deregister, Instances, Registration, Registry, RegistryConfig, ServiceInfo,
    Target,
};
use crate::Error;
use crate::backoff::Backoff;

/// The etcd registry. Cheap to clone; clones share the lease, the registrations and the watches.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), jupiter_core::Error> {
/// use jupiter_core::registry::{EtcdRegistry, Registry, RegistryConfig, ServiceInfo};
///
/// let config = RegistryConfig { endpoints: vec!["http://127.0.0.1:2379".into()], ..Default::default() };
/// let registry = EtcdRegistry::connect(config).await?;
/// let _guard = registry.register(ServiceInfo::new("objstore", "grpc", "127.0.0.1:7070").mode("prod")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.config.endpoints)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    config: RegistryConfig,
    /// The process's lease; 0 until the first registration, and after a loss until re-granted.
    lease: tokio::sync::Mutex<i64>,
    /// Keys this process keeps registered (re-put after a lease loss).
    keys: Mutex<BTreeMap<String, Kept>>,
    supervisor: std::sync::Once,
    stop: CancellationToken,
    book: Book,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EtcdRegistry {
    /// Connects and checks that etcd answers, within `config.timeout` (retrying for
    /// `config.start_retry`).
    ///
    /// # Errors
    ///
    /// etcd did not answer in time: the error names the endpoints.
    pub async fn connect(config: RegistryConfig) -> Result<EtcdRegistry, Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(5), config.timeout)
            .with_keep_alive_while_idle(true);
        let give_up = tokio::time::Instant::now() + config.start_retry;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let client = loop {
            let attempt = async {
                let mut client = Client::connect(&config.endpoints, Some(options.clone())).await?;
                client.status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            let err = match deadline(&config, "connect", attempt).await {
                Ok(client) => break client,
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= give_up {
                return Err(err);
            }
            tracing::warn!(error = %err, "etcd not reachable yet; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        };
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                client,
                config,
                lease: tokio::sync::Mutex::new(0),
                keys: Mutex::new(BTreeMap::new()),
                supervisor: std::sync::Once::new(),
                stop: CancellationToken::new(),
                book: Book::default(),
            }),
        })
    }

    /// Deregisters everything, revokes the lease and stops the background tasks.
    ///
    /// # Errors
    ///
    /// etcd could not be reached; the lease then expires by itself.
    pub async fn close(&self) -> Result<(), Error> {
        self.inner.stop.cancel();
        let keys: Vec<String> = std::mem::take(&mut *self.inner.lock_keys())
            .into_keys()
            .collect();
        for key in &keys {
            self.inner.book.deregistered(key);
        }
        let lease = std::mem::take(&mut *self.inner.lease.lock().await);
        if lease != 0 {
            let mut client = self.inner.client.clone();
            deadline(&self.inner.config, "revoke lease", async move {
                client.lease_revoke(lease).await.map(drop)
            })
            .await?;
        }
        Ok(())
    }
}

/// Runs an etcd call under the configured deadline: an unreachable etcd never hangs a caller.
async fn deadline<T>(
    config: &RegistryConfig,
    op: &'static str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(config.timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Etcd {
            op,
            endpoints: config.endpoints.join(","),
            source: Box::new(source),
        }),
        Err(_) => Err(Error::Timeout {
            what: format!("etcd {op} at {}", config.endpoints.join(",")),
            after: config.timeout,
        }),
    }
}

impl Inner {
    fn lock_keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Kept>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.config.ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// The current lease, granted (and every key re-put) if there is none.
    async fn lease(&self) -> Result<i64, Error> {
        let mut lease = self.lease.lock().await;
        if *lease != 0 {
            return Ok(*lease);
        }
        let mut client = self.client.clone();
        let ttl = self.ttl_secs();
        let granted = deadline(&self.config, "grant lease", async move {
            client.lease_grant(ttl, None).await
        })
        .await?;
        let id = granted.id();
        let keys: Vec<(String, Kept)> = self
            .lock_keys()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in keys {
            self.put(id, key, &value).await?;
        }
        *lease = id;
        tracing::debug!(lease = id, ttl, "etcd lease granted");
        Ok(id)
    }

    async fn put(&self, lease: i64, key: String, value: &Kept) -> Result<(), Error> {
        let value = value.text(lease);
        let mut client = self.client.clone();
        let opts = PutOptions::new().with_lease(lease);
        deadline(&self.config, "put", async move {
            client.put(key, value, Some(opts)).await.map(drop)
        })
        .await
    }

    async fn forget_lease(&self, id: i64) {
        let mut lease = self.lease.lock().await;
        if *lease == id {
            *lease = 0;
        }
    }
}

/// Keeps the lease alive; on loss, re-grants it and re-puts every key.
async fn supervise(weak: Weak<Inner>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            r = keep_alive_session(&inner) => r,
        };
        drop(inner);
        match outcome {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "etcd lease keep-alive interrupted");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One keep-alive stream; returns when it breaks (Ok: the lease expired and was dropped, so
/// the next session re-grants at once).
async fn keep_alive_session(inner: &Inner) -> Result<(), Error> {
    let lease = inner.lease().await?;
    let mut client = inner.client.clone();
    let started = tokio::time::timeout(inner.config.timeout, client.lease_keep_alive(lease)).await;
    let (mut keeper, mut stream) = match started {
        Ok(Ok(pair)) => pair,
        // etcd-client reports a lease that no longer exists (it expired while etcd or the
        // connection was down, or was revoked) as this error: drop it so the next session
        // grants a new one and re-puts every key.
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) => {
            tracing::warn!(lease, reason = %msg, "etcd lease lost; re-registering");
            inner.forget_lease(lease).await;
            return Ok(());
        }
        Ok(Err(source)) => {
            return Err(Error::Etcd {
                op: "keep lease alive",
                endpoints: inner.config.endpoints.join(","),
                source: Box::new(source),
            });
        }
        Err(_) => {
            return Err(Error::Timeout {
                what: format!("etcd keep-alive at {}", inner.config.endpoints.join(",")),
                after: inner.config.timeout,
            });
        }
    };
    let period = (inner.config.ttl / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                deadline(&inner.config, "keep lease alive", keeper.keep_alive()).await?;
            }
            msg = tokio::time::timeout(period + inner.config.timeout, stream.message()) => match msg {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                Ok(Ok(Some(_))) => {
                    tracing::warn!(lease, "etcd lease expired; re-registering");
                    inner.forget_lease(lease).await;
                    return Ok(());
                }
                Ok(Ok(None)) => return Err(Error::Timeout { what: "etcd keep-alive stream ended".into(), after: Duration::ZERO }),
                Ok(Err(source)) => {
                    return Err(Error::Etcd { op: "keep lease alive", endpoints: inner.config.endpoints.join(","), source: Box::new(source) });
                }
                Err(_) => return Err(Error::Timeout { what: "etcd keep-alive response".into(), after: period + inner.config.timeout }),
            }
        }
    }
}

/// Registration owner: stops maintaining and deletes the key.
struct Owner(Weak<Inner>);

impl Deregister for Owner {
    fn forget(&self, key: &str) {
        if let Some(inner) = self.0.upgrade() {
            inner.lock_keys().remove(key);
            inner.book.deregistered(key);
        }
    }

    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), Error>> {
        let weak = self.0.clone();
        Box::pin(async move {
            let Some(inner) = weak.upgrade() else {
                return Ok(());
            };
            let mut client = inner.client.clone();
            deadline(&inner.config, "delete", async move {
                client.delete(key, None).await.map(drop)
            })
            .await
        })
    }
}

impl EtcdRegistry {
    /// Puts `key` under the lease and keeps it there (re-put after a lease loss).
    async fn keep(&self, key: String, value: Kept) -> Result<Registration, Error> {
        let inner = &self.inner;
        let lease = inner.lease().await?;
        inner.put(lease, key.clone(), &value).await?;
        inner.lock_keys().insert(key.clone(), value);
        inner.supervisor.call_once(|| {
            tokio::spawn(supervise(Arc::downgrade(inner), inner.stop.clone()));
        });
        Ok(Registration::new(
            key,
            Arc::new(Owner(Arc::downgrade(inner))),
        ))
    }
}

/// The value of a key kept under the lease.
#[derive(Clone)]
enum Kept {
    /// As it is (an instance's JSON, an address).
    Text(String),
    /// The lease it is under, in decimal, whichever that is now (a Dubbo provider key).
    LeaseId,
}

impl Kept {
    fn text(&self, lease: i64) -> String {
        match self {
            Kept::Text(t) => t.clone(),
            Kept::LeaseId => lease.to_string(),
        }
    }
}

impl Registry for EtcdRegistry {
    fn register_dubbo(
        &self,
        app: &str,
        address: &str,
        service: &DubboService,
    ) -> BoxFuture<'_, Result<Option<Registration>, Error>> {
        let wanted = self
            .inner
            .config
            .also_register
            .contains(&AlsoRegister::Dubbo);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let key = service.provider_key(&service.provider_url(app, address, now_ms));
        Box::pin(async move {
            if !wanted {
                return Ok(None);
            }
            self.keep(key, Kept::LeaseId).await.map(Some)
        })
    }

    fn register(&self, info: ServiceInfo) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(async move {
            let reg = self.keep(info.key(), Kept::Text(info.value())).await?;
            self.inner.book.registered(reg.key(), &info);
            Ok(reg)
        })
    }

    fn register_key(
        &self,
        key: String,
        value: String,
    ) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(self.keep(key, Kept::Text(value)))
    }

    fn discover(&self, target: Target) -> BoxFuture<'_, Result<watch::Receiver<Instances>, Error>> {
        Box::pin(async move {
            if let Some(rx) = self.inner.book.watching(&target) {
                return Ok(rx);
            }
            // The first listing happens here, so an unreachable etcd is the caller's error.
            let prefix = target.prefix();
            let dubbo = target.dubbo.clone();
            let (set, revision) = list(&self.inner, &prefix, dubbo.as_ref()).await?;
            let (tx, rx) = watch::channel(snapshot_of(&set));
            self.inner.book.watch_started(target, &rx);
            tokio::spawn(follow(
                Arc::downgrade(&self.inner),
                self.inner.stop.clone(),
                (prefix, dubbo),
                set,
                revision,
                tx,
            ));
            Ok(rx)
        })
    }

    fn snapshot(&self) -> serde_json::Value {
        let mut v = self.inner.book.snapshot("etcd");
        v["endpoints"] = serde_json::json!(self.inner.config.endpoints);
        v
    }
}

type Set = BTreeMap<String, ServiceInfo>;

fn snapshot_of(set: &Set) -> Instances {
    // A Jupiter set is keyed by address already; a Dubbo one by provider URL.
    let mut all: Vec<ServiceInfo> = set.values().cloned().collect();
    all.sort_by(|a, b| a.address.cmp(&b.address));
    all.into()
}

/// Lists `prefix`: the instances and the revision to watch from.
async fn list(
    inner: &Inner,
    prefix: &str,
    dubbo: Option<&DubboTarget>,
) -> Result<(Set, i64), Error> {
    let mut client = inner.client.clone();
    let key = prefix.to_owned();
    let resp = deadline(&inner.config, "list", async move {
        client.get(key, Some(GetOptions::new().with_prefix())).await
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut set = Set::new();
    for kv in resp.kvs() {
        apply_put(&mut set, prefix, dubbo, kv.key(), kv.value());
    }
    Ok((set, revision))
}

fn address_of<'a>(prefix: &str, key: &'a [u8]) -> Option<&'a str> {
    let addr = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    // `host:port` only, as Go Jupiter's discovery requires.
    let (host, port) = addr.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(addr)
}

/// A Dubbo provider key's child (the encoded URL): the set's key for it.
fn child_of<'a>(prefix: &str, key: &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(key).ok()?.strip_prefix(prefix)
}

fn apply_put(set: &mut Set, prefix: &str, dubbo: Option<&DubboTarget>, key: &[u8], value: &[u8]) {
    if let Some(target) = dubbo {
        // The provider is its key; the value (a lease id) says nothing.
        let Some(child) = child_of(prefix, key) else {
            return;
        };
        match target.provider(child) {
            Some(info) => {
                set.insert(child.to_owned(), info);
            }
            None => {
                set.remove(child);
            }
        }
        return;
    }
    let Some(addr) = address_of(prefix, key) else {
        return;
    };
    match ServiceInfo::from_value(addr, value) {
        Some(info) => {
            set.insert(addr.to_owned(), info);
        }
        None => {
            // Go Jupiter writes `Op: 1` to mark a removal without deleting the key.
            set.remove(addr);
        }
    }
}

/// Follows `prefix` for as long as someone watches: watch from the listed revision + 1, apply
/// events, and list again after any error or compaction.
async fn follow(
    weak: Weak<Inner>,
    stop: CancellationToken,
    (prefix, dubbo): (String, Option<DubboTarget>),
    mut set: Set,
    mut revision: i64,
    tx: watch::Sender<Instances>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            () = tx.closed() => return,
            r = watch_session(&inner, (&prefix, dubbo.as_ref()), &mut set, revision, &tx, &mut backoff) => r,
        };
        if let Err(e) = result {
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, %prefix, retry_in = ?delay, "etcd registry watch interrupted");
            drop(inner);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            match list(&inner, &prefix, dubbo.as_ref()).await {
                Ok((fresh, rev)) => {
                    set = fresh;
                    revision = rev;
                    publish(&tx, &set);
                }
                Err(e) => tracing::warn!(error = %e, %prefix, "etcd registry relist failed"),
            }
        }
    }
}

fn publish(tx: &watch::Sender<Instances>, set: &Set) {
    tx.send_if_modified(|current| {
        let fresh = snapshot_of(set);
        if **current == *fresh {
            false
        } else {
            *current = fresh;
            true
        }
    });
}

async fn watch_session(
    inner: &Inner,
    (prefix, dubbo): (&str, Option<&DubboTarget>),
    set: &mut Set,
    revision: i64,
    tx: &watch::Sender<Instances>,
    backoff: &mut Backoff,
) -> Result<(), Error> {
    let mut client = inner.client.clone();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1)
        .with_progress_notify();
    let key = prefix.to_owned();
    let mut stream = deadline(&inner.config, "watch", async move {
        client.watch(key, Some(opts)).await
    })
    .await?;
    backoff.reset();
    loop {
        // Progress notifications arrive every few minutes at most; the keep-alive on the
        // connection is what detects a dead etcd, so no read deadline here.
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Err(Error::Timeout {
                    what: "etcd watch stream ended".into(),
                    after: Duration::ZERO,
                });
            }
            Err(source) => {
                return Err(Error::Etcd {
                    op: "watch",
                    endpoints: inner.config.endpoints.join(","),
                    source: Box::new(source),
                });
            }
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(Error::Timeout {
                what: format!("etcd watch canceled ({})", resp.cancel_reason()),
                after: Duration::ZERO,
            });
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => apply_put(set, prefix, dubbo, kv.key(), kv.value()),
                EventType::Delete => {
                    let gone = match dubbo {
                        Some(_) => child_of(prefix, kv.key()),
                        None => address_of(prefix, kv.key()),
                    };
                    if let Some(key) = gone {
                        set.remove(key);
                    }
                }
            }
        }
        publish(tx, set);
    }
}
