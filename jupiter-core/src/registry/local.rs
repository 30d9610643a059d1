//! The in-process registry: the embedded default.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Book, Deregister, Instances, Registration, Registry, ServiceInfo, Target};
use crate::Error;

/// A registry inside this process: services of one process find each other without a server.
/// Cheap to clone; clones share the registry.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), jupiter_core::Error> {
/// use jupiter_core::registry::{LocalRegistry, Registry, ServiceInfo};
///
/// let registry = LocalRegistry::new();
/// let info = ServiceInfo::new("objstore", "grpc", "127.0.0.1:7070");
/// let mut instances = registry.discover(info.target()).await?;
/// let guard = registry.register(info).await?;
/// instances.changed().await.unwrap();
/// assert_eq!(instances.borrow()[0].address, "127.0.0.1:7070");
/// guard.deregister().await?;
/// assert!(instances.borrow_and_update().is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct LocalRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    book: Book,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, ServiceInfo>,
    watchers: HashMap<Target, watch::Sender<Instances>>,
}

impl LocalRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        LocalRegistry::default()
    }
}

impl Inner {
    fn set_of(state: &State, target: &Target) -> Instances {
        let prefix = target.prefix();
        state
            .instances
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn notify(&self, state: &State, target: &Target) {
        if let Some(tx) = state.watchers.get(target) {
            tx.send_replace(Self::set_of(state, target));
        }
    }
}

/// The owner handed to registrations: deletes synchronously.
struct Owner(Arc<Inner>);

impl Deregister for Owner {
    fn forget(&self, key: &str) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(info) = state.instances.remove(key) {
            self.0.notify(&state, &info.target());
        }
        self.0.book.deregistered(key);
    }

    fn delete(&self, _key: String) -> BoxFuture<'static, Result<(), Error>> {
        // `forget` already removed it.
        Box::pin(async { Ok(()) })
    }
}

impl Registry for LocalRegistry {
    fn register(&self, info: ServiceInfo) -> BoxFuture<'_, Result<Registration, Error>> {
        Box::pin(async move {
            let key = info.key();
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.instances.insert(key.clone(), info.clone());
            self.inner.notify(&state, &info.target());
            self.inner.book.registered(&key, &info);
            Ok(Registration::new(key, Arc::new(Owner(self.inner.clone()))))
        })
    }

    fn discover(&self, target: Target) -> BoxFuture<'_, Result<watch::Receiver<Instances>, Error>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = state.watchers.get(&target) {
                return Ok(tx.subscribe());
            }
            let (tx, rx) = watch::channel(Inner::set_of(&state, &target));
            self.inner.book.watch_started(target.clone(), &rx);
            state.watchers.insert(target, tx);
            Ok(rx)
        })
    }

    fn snapshot(&self) -> serde_json::Value {
        self.inner.book.snapshot("local")
    }
}
