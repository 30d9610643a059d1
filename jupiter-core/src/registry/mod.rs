//! Service registry: register instances with a lease, discover a service's complete, current
//! instance set as a watch.
//!
//! # Implementations
//!
//! - [`LocalRegistry`]: in-process, the embedded default (no server needed).
//! - [`EtcdRegistry`]: etcd v3, wire-compatible with Go Jupiter's `etcdv3` registry.
//!
//! # Key layout (etcd, shared with Go Jupiter)
//!
//! One key per instance, attached to the process's lease:
//!
//! ```text
//! {scheme}:{name}:v1:{mode}/{address}     e.g.  grpc:objstore:v1:prod/127.0.0.1:7070
//! ```
//!
//! The value is the JSON of Go Jupiter's `registry.Update`:
//!
//! ```json
//! {"Op":0,"Addr":"127.0.0.1:7070","MetadataX":{"name":"objstore","appId":"","scheme":"grpc",
//!  "address":"127.0.0.1:7070","weight":100,"enable":true,"healthy":true,"metadata":{},
//!  "region":"","zone":"","kind":1,"version":"v1","mode":"prod","hostname":"h1",
//!  "deployment":"","group":""}}
//! ```
//!
//! `Op` is 0 (add) or 1 (delete); `kind` is 0 unknown, 1 provider, 2 governor, 3 consumer.
//! Discovery lists and watches the prefix `{scheme}:{name}:v1:{mode}/`; the part after the
//! prefix must be `host:port`. This layout is stable: changing it breaks interoperation with Go
//! Jupiter services.
//!
//! # Failure behaviour (etcd)
//!
//! - One lease per [`EtcdRegistry`] (process), kept alive by a supervisor task; a process that
//!   dies without deregistering disappears after the lease TTL.
//! - etcd-client re-establishes neither keep-alives nor watches: the supervisor re-grants an
//!   expired lease and re-puts every registered key, and each discovery task lists and watches
//!   again from the listed revision after any error, so watchers converge on the true set.
//! - Every etcd call has a deadline: an unreachable etcd is an error, never a hang.

pub mod dubbo;
mod etcd;
pub mod grpc;
mod local;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::watch;

pub use self::etcd::EtcdRegistry;
pub use self::local::LocalRegistry;
use crate::Error;
use crate::app::Registrar;
use crate::config::types;
use crate::error::BoxError;
use crate::governance::RegistryView;

/// What kind of endpoint an instance is (Go Jupiter's `constant.ServiceKind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u8", into = "u8")]
pub enum ServiceKind {
    /// Not said.
    #[default]
    Unknown,
    /// Serves requests.
    Provider,
    /// A governance (metrics, health) endpoint.
    Governor,
    /// Consumes a service.
    Consumer,
}

impl From<u8> for ServiceKind {
    fn from(v: u8) -> Self {
        match v {
            1 => ServiceKind::Provider,
            2 => ServiceKind::Governor,
            3 => ServiceKind::Consumer,
            _ => ServiceKind::Unknown,
        }
    }
}

impl From<ServiceKind> for u8 {
    fn from(k: ServiceKind) -> u8 {
        k as u8
    }
}

/// One instance of a service, with Go Jupiter's `ServiceInfo` JSON field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceInfo {
    /// Service name, e.g. `objstore`.
    pub name: String,
    /// Application id.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Protocol: `grpc`, `http`, `redis`.
    pub scheme: String,
    /// `host:port`.
    pub address: String,
    /// Relative weight for load balancing. Default is 100.
    pub weight: f64,
    /// Whether the instance takes traffic.
    pub enable: bool,
    /// Whether the instance reports healthy.
    pub healthy: bool,
    /// Free-form metadata. Go writes `null` for an empty map; read as empty.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Endpoint kind.
    pub kind: ServiceKind,
    /// Registry schema version; `v1`.
    pub version: String,
    /// Deployment mode (environment): `prod`, `staging`; part of the key.
    pub mode: String,
    /// Host name.
    pub hostname: String,
    /// Deployment group (traffic isolation).
    pub deployment: String,
    /// Traffic group (load balancing between groups).
    pub group: String,
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go Jupiter's default mode when none is configured.
pub const DEFAULT_MODE: &str = "unknown-mode";

impl Default for ServiceInfo {
    fn default() -> Self {
        ServiceInfo {
            name: String::new(),
            app_id: String::new(),
            scheme: String::new(),
            address: String::new(),
            weight: 100.0,
            enable: true,
            healthy: true,
            metadata: BTreeMap::new(),
            region: String::new(),
            zone: String::new(),
            kind: ServiceKind::Provider,
            version: "v1".to_owned(),
            mode: DEFAULT_MODE.to_owned(),
            hostname: hostname(),
            deployment: String::new(),
            group: String::new(),
        }
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl ServiceInfo {
    /// An enabled, healthy provider `name` at `address` speaking `scheme`, weight 100.
    pub fn new(
        name: impl Into<String>,
        scheme: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        ServiceInfo {
            name: name.into(),
            scheme: scheme.into(),
            address: address.into(),
            ..ServiceInfo::default()
        }
    }

    /// Sets the mode. Default is `unknown-mode`, as in Go Jupiter.
    #[must_use]
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = mode.into();
        self
    }

    /// Sets the kind. Default is [`ServiceKind::Provider`].
    #[must_use]
    pub fn kind(mut self, kind: ServiceKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the zone.
    #[must_use]
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// Sets the weight.
    #[must_use]
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The service this instance belongs to.
    pub fn target(&self) -> Target {
        Target {
            scheme: self.scheme.clone(),
            name: self.name.clone(),
            mode: self.mode.clone(),
            dubbo: None,
        }
    }

    /// The registry key: `{scheme}:{name}:v1:{mode}/{address}`.
    pub fn key(&self) -> String {
        format!("{}{}", self.target().prefix(), self.address)
    }

    /// The registry value: Go Jupiter's `registry.Update` JSON with `Op` 0.
    pub fn value(&self) -> String {
        #[derive(Serialize)]
        struct Update<'a> {
            #[serde(rename = "Op")]
            op: u8,
            #[serde(rename = "Addr")]
            addr: &'a str,
            #[serde(rename = "MetadataX")]
            metadata_x: &'a ServiceInfo,
        }
        serde_json::to_string(&Update {
            op: 0,
            addr: &self.address,
            metadata_x: self,
        })
        .expect("ServiceInfo serializes")
    }

    /// Parses a registry value under `prefix`-keyed `address`. `None` for a delete update or a
    /// value that is not an update.
    pub fn from_value(address: &str, value: &[u8]) -> Option<ServiceInfo> {
        #[derive(Deserialize)]
        struct Update {
            #[serde(rename = "Op", default)]
            op: u8,
            #[serde(rename = "Addr", default)]
            addr: String,
            #[serde(rename = "MetadataX", default)]
            metadata_x: Option<ServiceInfo>,
        }
        let update: Update = serde_json::from_slice(value).ok()?;
        if update.op != 0 {
            return None;
        }
        let mut info = update.metadata_x.unwrap_or_default();
        // The key is the truth for the address: Go Jupiter's discovery uses the key too.
        info.address = address.to_owned();
        if info.address.is_empty() {
            info.address = update.addr;
        }
        Some(info)
    }
}

/// A service to discover: scheme, name and mode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Protocol.
    pub scheme: String,
    /// Service name.
    pub name: String,
    /// Mode.
    pub mode: String,
    /// A Dubbo interface's providers instead of a Jupiter service ([`Target::dubbo`]).
    pub dubbo: Option<dubbo::DubboTarget>,
}

impl Target {
    /// `scheme` `name` in `mode`.
    pub fn new(
        scheme: impl Into<String>,
        name: impl Into<String>,
        mode: impl Into<String>,
    ) -> Self {
        Target {
            scheme: scheme.into(),
            name: name.into(),
            mode: mode.into(),
            dubbo: None,
        }
    }

    /// The providers of a Dubbo interface (Java Dubbo-gRPC, dubbo-go), from the keys Dubbo's
    /// etcd3 registry writes: gRPC and Triple providers of the target's group and version
    /// that are not disabled.
    pub fn dubbo(target: dubbo::DubboTarget) -> Self {
        Target {
            scheme: "dubbo".into(),
            name: target.interface.clone(),
            mode: String::new(),
            dubbo: Some(target),
        }
    }

    /// The key prefix of its instances: `{scheme}:{name}:v1:{mode}/`, or a Dubbo interface's
    /// `/{group}/{interface}/providers/`.
    pub fn prefix(&self) -> String {
        match &self.dubbo {
            Some(d) => d.prefix(),
            None => format!("{}:{}:v1:{}/", self.scheme, self.name, self.mode),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dubbo {
            Some(d) => write!(f, "dubbo:{}", d.prefix()),
            None => write!(f, "{}:{}:v1:{}", self.scheme, self.name, self.mode),
        }
    }
}

/// The complete current instance set of a service, sorted by address.
pub type Instances = Arc<[ServiceInfo]>;

/// A service registry. Implementations are cheap to clone handles.
pub trait Registry: Send + Sync + 'static {
    /// Registers an instance; it stays registered until the returned guard is dropped or
    /// [`Registration::deregister`]ed.
    ///
    /// # Errors
    ///
    /// The registry cannot be reached within its deadline.
    fn register(&self, info: ServiceInfo) -> BoxFuture<'_, Result<Registration, Error>>;

    /// Watches the complete instance set of `target`; the receiver holds the current set.
    ///
    /// # Errors
    ///
    /// The first listing failed within the registry's deadline.
    fn discover(&self, target: Target) -> BoxFuture<'_, Result<watch::Receiver<Instances>, Error>>;

    /// What this process registered and discovered, for `/registry`.
    fn snapshot(&self) -> serde_json::Value;

    /// Keeps a raw `key` = `value` registered under the process's lease, as an instance is
    /// (put again after a lease loss, deleted with the registration): the governance key of
    /// Prometheus's service discovery and Juno (see [`GovernanceRegistrar`]). The default, for
    /// registries nothing outside the process reads (the in-process one), keeps nothing.
    ///
    /// # Errors
    ///
    /// The registry cannot be reached within its deadline.
    fn register_key(
        &self,
        key: String,
        value: String,
    ) -> BoxFuture<'_, Result<Registration, Error>> {
        drop(value);
        Box::pin(async move { Ok(Registration { key, owner: None }) })
    }

    /// Registers `service` at `address` of application `app` as a Dubbo provider (see
    /// [`dubbo`]), under the process's lease, when the registry's `also-register` names
    /// `dubbo`; `None` otherwise (and from registries Dubbo does not read).
    ///
    /// # Errors
    ///
    /// The registry cannot be reached within its deadline.
    fn register_dubbo(
        &self,
        app: &str,
        address: &str,
        service: &dubbo::DubboService,
    ) -> BoxFuture<'_, Result<Option<Registration>, Error>> {
        let _ = (app, address, service);
        Box::pin(async { Ok(None) })
    }
}

impl RegistryView for Arc<dyn Registry> {
    fn snapshot(&self) -> serde_json::Value {
        Registry::snapshot(self.as_ref())
    }
}

/// Removes a registration; implemented by each registry.
pub(crate) trait Deregister: Send + Sync + 'static {
    /// Stops maintaining `key` (no re-put after a lease loss). Synchronous, for `Drop`.
    fn forget(&self, key: &str);
    /// Deletes `key` from the registry.
    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), Error>>;
}

/// Keeps an instance registered. Dropping it deregisters in the background (best effort, on the
/// current tokio runtime); [`deregister`](Registration::deregister) does it and waits.
#[must_use = "dropping the registration deregisters the instance"]
pub struct Registration {
    key: String,
    owner: Option<Arc<dyn Deregister>>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}

impl Registration {
    pub(crate) fn new(key: String, owner: Arc<dyn Deregister>) -> Self {
        Registration {
            key,
            owner: Some(owner),
        }
    }

    /// The registry key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deregisters and waits for the registry to confirm.
    ///
    /// # Errors
    ///
    /// The registry cannot be reached within its deadline (with etcd, the key then expires with
    /// the lease).
    pub async fn deregister(mut self) -> Result<(), Error> {
        match self.owner.take() {
            Some(owner) => {
                owner.forget(&self.key);
                owner.delete(std::mem::take(&mut self.key)).await
            }
            None => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.forget(&self.key);
            let delete = owner.delete(std::mem::take(&mut self.key));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = delete.await {
                        tracing::warn!(error = %e, "deregistration on drop failed; the lease will expire it");
                    }
                });
            }
        }
    }
}

/// The `[registry]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistryConfig {
    /// `local` (in-process, default) or `etcd`.
    pub kind: RegistryKind,
    /// etcd endpoints. Default is `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Lease TTL: how long a dead process stays listed. Default is 10 s.
    #[serde(with = "types::duration")]
    pub ttl: Duration,
    /// Deadline of every etcd call. Default is 3 s.
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    /// At start, keep retrying an unreachable etcd for this long before failing. Default is 0
    /// (fail at once with a clear error).
    #[serde(with = "types::duration")]
    pub start_retry: Duration,
    /// Other registries' keys written beside Go Jupiter's for services that describe
    /// themselves for them: `["dubbo"]` writes Dubbo's interface-level provider keys (see
    /// [`dubbo`]; [`ServiceRegistrar::dubbo`]). Default: none.
    pub also_register: Vec<AlsoRegister>,
}

/// A registry layout written beside Go Jupiter's (`also-register`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlsoRegister {
    /// Apache Dubbo's etcd3 registry: interface-level provider keys.
    Dubbo,
}

/// Which registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    /// In-process.
    #[default]
    Local,
    /// etcd v3.
    Etcd,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            kind: RegistryKind::Local,
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            start_retry: Duration::ZERO,
            also_register: Vec::new(),
        }
    }
}

impl RegistryConfig {
    /// The etcd registry a command-line URL names: `etcd://HOST:PORT[,HOST:PORT…]`, or
    /// `http(s)://` endpoints separated by commas; every other setting at its default.
    ///
    /// # Errors
    ///
    /// Not such a URL (the message says what to write).
    pub fn from_url(url: &str) -> Result<RegistryConfig, String> {
        let endpoints: Vec<String> = match url.strip_prefix("etcd://") {
            Some(hosts) => hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("http://{h}"))
                .collect(),
            None if url.starts_with("http://") || url.starts_with("https://") => {
                url.split(',').map(str::to_owned).collect()
            }
            None => Vec::new(),
        };
        if endpoints.is_empty() {
            return Err(format!(
                "{url:?} is not a registry: write etcd://HOST:PORT (several: etcd://a:2379,b:2379)"
            ));
        }
        Ok(RegistryConfig {
            kind: RegistryKind::Etcd,
            endpoints,
            ..RegistryConfig::default()
        })
    }
}

/// Builds the registry a `[registry]` section describes.
///
/// # Errors
///
/// etcd cannot be reached (after `start-retry`).
pub async fn from_config(config: &RegistryConfig) -> Result<Arc<dyn Registry>, Error> {
    Ok(match config.kind {
        RegistryKind::Local => Arc::new(LocalRegistry::new()),
        RegistryKind::Etcd => Arc::new(EtcdRegistry::connect(config.clone()).await?),
    })
}

/// Registers an instance with `registry` once the app serves (an [`App`](crate::App)
/// registrar) and deregisters it first at shutdown.
pub struct ServiceRegistrar {
    registry: Arc<dyn Registry>,
    info: Box<dyn Fn() -> ServiceInfo + Send + Sync>,
    dubbo: Option<dubbo::DubboService>,
    registration: tokio::sync::Mutex<Vec<Registration>>,
}

impl fmt::Debug for ServiceRegistrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistrar").finish_non_exhaustive()
    }
}

impl ServiceRegistrar {
    /// A registrar for `info`.
    pub fn new(registry: Arc<dyn Registry>, info: ServiceInfo) -> Self {
        Self::with(registry, move || info.clone())
    }

    /// A registrar whose instance is described when registration happens, once serving (for
    /// an address known only after binding port 0).
    pub fn with(
        registry: Arc<dyn Registry>,
        info: impl Fn() -> ServiceInfo + Send + Sync + 'static,
    ) -> Self {
        ServiceRegistrar {
            registry,
            info: Box::new(info),
            dubbo: None,
            registration: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Registers the instance as a Dubbo provider of `service` too, where the registry's
    /// `also-register` names `dubbo`.
    #[must_use]
    pub fn dubbo(mut self, service: dubbo::DubboService) -> Self {
        self.dubbo = Some(service);
        self
    }
}

impl Registrar for ServiceRegistrar {
    fn register(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let info = (self.info)();
            let reg = self.registry.register(info.clone()).await?;
            tracing::info!(key = reg.key(), "registered");
            let mut held = self.registration.lock().await;
            held.push(reg);
            if let Some(service) = &self.dubbo {
                let app = if info.app_id.is_empty() {
                    &info.name
                } else {
                    &info.app_id
                };
                if let Some(reg) = self
                    .registry
                    .register_dubbo(app, &info.address, service)
                    .await?
                {
                    tracing::info!(key = reg.key(), "registered for Dubbo");
                    held.push(reg);
                }
            }
            Ok(())
        })
    }

    fn deregister(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let held = std::mem::take(&mut *self.registration.lock().await);
            // Every key is deleted even if one delete fails; the first error is returned.
            let mut first = None;
            for reg in held.into_iter().rev() {
                let key = reg.key().to_owned();
                match reg.deregister().await {
                    Ok(()) => tracing::info!(%key, "deregistered"),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            match first {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        })
    }
}

/// Registers the governance server's address where Prometheus's etcd service discovery and
/// Juno look for it, `/prometheus/job/{app}/{hostname}` = `ip:port`, under the process's lease
/// (gone with it when the process dies), and deletes it first at shutdown. Go Jupiter's
/// governor writes the same key. Bound to an unspecified address (`0.0.0.0`), the value is
/// `{hostname}:{port}`. Made by [`App::register_governance`](crate::app::App::register_governance).
pub struct GovernanceRegistrar {
    registry: Arc<dyn Registry>,
    app: String,
    addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    registration: tokio::sync::Mutex<Option<Registration>>,
}

impl fmt::Debug for GovernanceRegistrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernanceRegistrar")
            .field("app", &self.app)
            .field("addr", &self.addr.get())
            .finish_non_exhaustive()
    }
}

impl GovernanceRegistrar {
    /// A registrar for app `app`'s governance server, whose address `addr` holds once bound
    /// (nothing is registered while it is empty: no governance server).
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        app: &str,
        addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    ) -> Self {
        GovernanceRegistrar {
            registry,
            app: app.to_owned(),
            addr,
            registration: tokio::sync::Mutex::new(None),
        }
    }

    /// The key and value for a server at `addr` on host `host`.
    pub fn entry(app: &str, host: &str, addr: std::net::SocketAddr) -> (String, String) {
        let value = if addr.ip().is_unspecified() {
            format!("{host}:{}", addr.port())
        } else {
            addr.to_string()
        };
        (format!("/prometheus/job/{app}/{host}"), value)
    }
}

impl crate::app::Registrar for GovernanceRegistrar {
    fn register(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let Some(addr) = self.addr.get() else {
                return Ok(());
            };
            let (key, value) = Self::entry(&self.app, &hostname(), *addr);
            let reg = self.registry.register_key(key, value).await?;
            tracing::info!(key = reg.key(), "governance registered");
            *self.registration.lock().await = Some(reg);
            Ok(())
        })
    }

    fn deregister(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if let Some(reg) = self.registration.lock().await.take() {
                reg.deregister().await?;
            }
            Ok(())
        })
    }
}

/// Shared bookkeeping for `/registry`: what was registered and what each watch currently sees.
#[derive(Default)]
pub(crate) struct Book {
    registered: Mutex<BTreeMap<String, ServiceInfo>>,
    discovered: Mutex<BTreeMap<Target, watch::Receiver<Instances>>>,
}

impl Book {
    pub(crate) fn registered(&self, key: &str, info: &ServiceInfo) {
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), info.clone());
    }

    pub(crate) fn deregistered(&self, key: &str) {
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub(crate) fn watching(&self, target: &Target) -> Option<watch::Receiver<Instances>> {
        let mut d = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        match d.get(target) {
            // A watch whose task ended (registry closed) is not reused.
            Some(rx) if rx.has_changed().is_ok() => Some(rx.clone()),
            Some(_) => {
                d.remove(target);
                None
            }
            None => None,
        }
    }

    pub(crate) fn watch_started(&self, target: Target, rx: &watch::Receiver<Instances>) {
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target, rx.clone());
    }

    pub(crate) fn snapshot(&self, kind: &str) -> serde_json::Value {
        let registered: Vec<serde_json::Value> = self
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, info)| serde_json::json!({ "key": k, "info": info }))
            .collect();
        let discovered: serde_json::Map<String, serde_json::Value> = self
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, rx)| {
                (
                    t.to_string(),
                    serde_json::json!(rx.borrow().iter().map(|i| &i.address).collect::<Vec<_>>()),
                )
            })
            .collect();
        serde_json::json!({ "kind": kind, "registered": registered, "discovered": discovered })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_follow_go_jupiter() {
        let info = ServiceInfo::new("objstore", "grpc", "127.0.0.1:7070").mode("prod");
        assert_eq!(info.key(), "grpc:objstore:v1:prod/127.0.0.1:7070");
        let v: serde_json::Value = serde_json::from_str(&info.value()).unwrap();
        assert_eq!(v["Op"], 0);
        assert_eq!(v["Addr"], "127.0.0.1:7070");
        let m = &v["MetadataX"];
        for field in [
            "name",
            "appId",
            "scheme",
            "address",
            "weight",
            "enable",
            "healthy",
            "metadata",
            "region",
            "zone",
            "kind",
            "version",
            "mode",
            "hostname",
            "deployment",
            "group",
        ] {
            assert!(m.get(field).is_some(), "missing {field}");
        }
        assert_eq!(m["kind"], 1);
        assert_eq!(m["weight"], 100.0);
        assert_eq!(
            ServiceInfo::from_value("127.0.0.1:7070", info.value().as_bytes()).unwrap(),
            info
        );
    }

    #[test]
    fn reads_what_go_jupiter_writes() {
        // As Go's encoding/json writes it: nil map as null, kind as a number.
        let go = r#"{"Op":0,"Addr":"10.0.0.1:9090","MetadataX":{"name":"demo","appId":"42","scheme":"grpc","address":"10.0.0.1:9090","weight":50,"enable":true,"healthy":true,"metadata":null,"region":"r","zone":"z","kind":2,"version":"v1","mode":"prod","hostname":"h","deployment":"d","group":"g"}}"#;
        let info = ServiceInfo::from_value("10.0.0.1:9090", go.as_bytes()).unwrap();
        assert_eq!(info.kind, ServiceKind::Governor);
        assert_eq!(info.weight, 50.0);
        assert!(info.metadata.is_empty());
        assert_eq!(info.app_id, "42");
        // A delete update and garbage are not instances.
        assert!(ServiceInfo::from_value("a:1", br#"{"Op":1,"Addr":"a:1"}"#).is_none());
        assert!(ServiceInfo::from_value("a:1", b"not json").is_none());
        // An update without metadata still names the address.
        assert_eq!(
            ServiceInfo::from_value("a:1", br#"{"Op":0,"Addr":"a:1"}"#)
                .unwrap()
                .address,
            "a:1"
        );
    }
}
