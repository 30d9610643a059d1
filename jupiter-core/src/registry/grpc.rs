//! A tonic channel over a discovered service: balances over its instances, follows changes,
//! and never waits forever.
//!
//! Why not tonic's `Channel::balance_channel`: with no ready endpoint a call waits forever, and
//! its load estimate reports every endpoint as 0. This channel:
//! - fails a call at once with `UNAVAILABLE` when the service has no enabled instance;
//! - bounds every call (queueing and connecting included) by a deadline, answering
//!   `DEADLINE_EXCEEDED`;
//! - picks by power of two choices over the real number of calls in flight per instance,
//!   weighted by the instance's registered weight.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceExt};

use super::{Instances, ServiceInfo};
use crate::error::BoxError;

/// Default call deadline of a [`BalancedChannel`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Default connect timeout per instance.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A balanced gRPC channel over a discovered service. Cheap to clone; use it wherever tonic
/// takes a channel (`MyClient::new(channel)`).
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), jupiter_core::Error> {
/// use jupiter_core::registry::{LocalRegistry, Registry, Target};
/// use jupiter_core::registry::grpc::BalancedChannel;
///
/// let registry = LocalRegistry::new();
/// let instances = registry.discover(Target::new("grpc", "objstore", "prod")).await?;
/// let channel = BalancedChannel::new(instances);
/// // let client = ObjstoreClient::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BalancedChannel {
    shared: Arc<Shared>,
}

struct Shared {
    backends: RwLock<Vec<Arc<Backend>>>,
    deadline: Duration,
    name: String,
}

struct Backend {
    addr: String,
    weight: f64,
    channel: Channel,
    in_flight: AtomicUsize,
}

impl fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.backends().iter().map(|b| b.addr.clone()).collect();
        f.debug_struct("BalancedChannel")
            .field("service", &self.shared.name)
            .field("instances", &addrs)
            .finish()
    }
}

impl BalancedChannel {
    /// A channel following `instances`, with [`DEFAULT_DEADLINE`] and
    /// [`DEFAULT_CONNECT_TIMEOUT`]. Must be called inside a tokio runtime.
    pub fn new(instances: watch::Receiver<Instances>) -> Self {
        Self::with_timeouts(instances, DEFAULT_DEADLINE, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A channel with an explicit call deadline and per-instance connect timeout.
    pub fn with_timeouts(
        mut instances: watch::Receiver<Instances>,
        deadline: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let current = instances.borrow_and_update().clone();
        let name = current
            .first()
            .map(|i| i.target().to_string())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            backends: RwLock::new(Vec::new()),
            deadline,
            name,
        });
        update(&shared, &current, connect_timeout);
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while instances.changed().await.is_ok() {
                let Some(shared) = weak.upgrade() else { return };
                let set = instances.borrow_and_update().clone();
                update(&shared, &set, connect_timeout);
            }
        });
        BalancedChannel { shared }
    }

    fn backends(&self) -> Vec<Arc<Backend>> {
        self.shared
            .backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Addresses of the instances the channel currently balances over.
    pub fn instances(&self) -> Vec<String> {
        self.backends().iter().map(|b| b.addr.clone()).collect()
    }

    /// Power of two choices on in-flight calls divided by weight.
    fn pick(&self) -> Option<Arc<Backend>> {
        let backends = self
            .shared
            .backends
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match backends.len() {
            0 => None,
            1 => Some(backends[0].clone()),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let load = |x: &Backend| {
                    (x.in_flight.load(Ordering::Relaxed) as f64 + 1.0) / x.weight.max(1e-9)
                };
                let pick = if load(&backends[a]) <= load(&backends[b]) {
                    a
                } else {
                    b
                };
                Some(backends[pick].clone())
            }
        }
    }
}

fn update(shared: &Shared, set: &[ServiceInfo], connect_timeout: Duration) {
    let mut backends = shared.backends.write().unwrap_or_else(|e| e.into_inner());
    let mut old: HashMap<String, Arc<Backend>> =
        backends.drain(..).map(|b| (b.addr.clone(), b)).collect();
    for info in set.iter().filter(|i| i.enable && i.weight > 0.0) {
        // Keep the connection of an instance that stays.
        if let Some(b) = old
            .remove(&info.address)
            .filter(|b| b.weight == info.weight)
        {
            backends.push(b);
            continue;
        }
        let Ok(endpoint) = Endpoint::from_shared(format!("http://{}", info.address)) else {
            tracing::warn!(address = %info.address, "instance address is not a valid URI; skipped");
            continue;
        };
        let channel = endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        backends.push(Arc::new(Backend {
            addr: info.address.clone(),
            weight: info.weight,
            channel,
            in_flight: AtomicUsize::new(0),
        }));
    }
}

struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is per instance and decided in `call`, under the deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let deadline = self.shared.deadline;
        let Some(backend) = self.pick() else {
            let name = self.shared.name.clone();
            return Box::pin(async move {
                let what = if name.is_empty() {
                    "the service".to_owned()
                } else {
                    name
                };
                Err(Box::new(tonic::Status::unavailable(format!(
                    "no instance of {what} is registered"
                ))) as BoxError)
            });
        };
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(backend);
        Box::pin(async move {
            let mut channel = guard.0.channel.clone();
            let call = async move { channel.ready().await?.call(req).await };
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(Box::new(tonic::Status::unavailable(format!(
                    "{}: {e}",
                    guard.0.addr
                ))) as BoxError),
                Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                    "no response from {} within {deadline:?}",
                    guard.0.addr
                ))) as BoxError),
            }
        })
    }
}
