//! objstore over gRPC, through objstore's own client; `embedded = true` starts an objstore in
//! this process first.
//!
//! Hot path: [`Objstore::execute`] renders the key into the worker's [`Scratch`]; a templated
//! value is rendered into a new buffer (the client takes it owned), a random value is shared.

use jupiter_core::BoxError;
use jupiter_core::shadow::ShadowContext;
use objstore::client::{Client, ClientConfig, Error as ClientError};

use super::{Call, Protocol, Scratch, check_status};
use crate::error::Problem;
use crate::scenario::{Action, ObjstoreOp, RunSection, Target};
use crate::stats::ErrorKind;

// gRPC code numbers, as a step's `checks.status` lists them.
const OK: u16 = 0;
const INVALID_ARGUMENT: u16 = 3;
const NOT_FOUND: u16 = 5;
const PERMISSION_DENIED: u16 = 7;
const RESOURCE_EXHAUSTED: u16 = 8;
const FAILED_PRECONDITION: u16 = 9;
const UNKNOWN: u16 = 2;

/// An objstore target.
#[derive(Debug)]
pub(crate) struct Objstore {
    client: Client,
    /// The in-process server, when embedded: stops when this target is dropped.
    _embedded: Option<Embedded>,
}

/// An in-process objstore: stops when dropped.
#[derive(Debug)]
struct Embedded {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Protocol for Objstore {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let spec = &target.spec;
        let (addr, embedded) = match &spec.url {
            Some(a) => (a.clone(), None),
            None => {
                let (addr, e) = start_embedded().await?;
                (addr, Some(e))
            }
        };
        let config = ClientConfig {
            timeout: run.timeout,
            read_attempts: 1,
            token: spec.token.clone(),
            tls: None,
        };
        Ok(Objstore {
            client: Client::connect_lazy(&addr, config)?,
            _embedded: embedded,
        })
    }

    async fn probe(&self, _target: &Target, _context: &ShadowContext) -> Result<(), Problem> {
        let acked = self
            .client
            .probe_shadow(b"loadtest-probe")
            .await
            .map_err(|e| Problem::caused_by("did not answer the probe", e))?;
        if !acked {
            return Err(Problem::new("answered without the shadow acknowledgement"));
        }
        Ok(())
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, .. } = call;
        let Action::Objstore {
            op,
            key,
            value: template,
            random,
        } = &step.action
        else {
            return Some(ErrorKind::Protocol);
        };
        s.path.clear();
        key.render(vars, &mut s.path);
        let c = &self.client;
        // A get's value, for the step's extractions.
        let mut value = None;
        let r: Result<u16, ClientError> = match op {
            ObjstoreOp::Put => {
                let v = match (template, random) {
                    (Some(t), _) => bytes::Bytes::from(t.render_vec(vars)),
                    (None, Some(r)) => r.clone(),
                    (None, None) => bytes::Bytes::new(),
                };
                c.put(&s.path, v, Default::default()).await.map(|_| OK)
            }
            ObjstoreOp::Get => c.get(&s.path).await.map(|o| {
                let code = found(o.is_some());
                value = o.map(|o| o.value);
                code
            }),
            ObjstoreOp::Head => c.head(&s.path).await.map(|o| found(o.is_some())),
            ObjstoreOp::Delete => c.delete(&s.path).await.map(|o| found(o.is_some())),
        };
        let code = match r {
            Ok(code) => code,
            Err(ClientError::NotFound) => NOT_FOUND,
            Err(ClientError::Precondition { .. }) => FAILED_PRECONDITION,
            Err(ClientError::Exhausted(_)) => RESOURCE_EXHAUSTED,
            Err(ClientError::Invalid(_)) => INVALID_ARGUMENT,
            Err(ClientError::Timeout(_)) => return Some(ErrorKind::Timeout),
            Err(ClientError::Unavailable(_) | ClientError::Connect { .. }) => {
                return Some(ErrorKind::Connect);
            }
            Err(ClientError::Refused(_)) => PERMISSION_DENIED,
            Err(ClientError::Other { code, .. }) => code as u16,
            Err(_) => UNKNOWN,
        };
        // An absent key is an answer, not a failure, except for a put.
        if let Some(e) = check_status(
            step,
            code,
            code == OK || (code == NOT_FOUND && *op != ObjstoreOp::Put),
        ) {
            return Some(e);
        }
        // Extractions read a get's value (the scenario allows them on gets only); an absent
        // key has nothing to give, a check error.
        for e in &step.extract {
            let found = value.as_deref().and_then(|v| {
                crate::scenario::extract(&e.how, std::iter::empty::<(&str, &[u8])>, v)
            });
            let Some(found) = found else {
                return Some(ErrorKind::Check);
            };
            s.extracted.push((e.var.clone(), found));
        }
        None
    }
}

/// The code of an answer that may be an absent key.
fn found(present: bool) -> u16 {
    if present { OK } else { NOT_FOUND }
}

/// Starts an objstore on a free loopback port in this process; returns its address.
async fn start_embedded() -> Result<(String, Embedded), BoxError> {
    use jupiter_core::shadow::{ShadowLayer, ShadowMode, ShadowSwitch};
    let metrics = jupiter_core::metrics::Metrics::new();
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig::default());
    engine.spawn_maintenance();
    let service = objstore::server::Service::new(engine, Default::default(), &metrics);
    let shadow = ShadowLayer::new("objstore", ShadowSwitch::new(ShadowMode::On), &metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(objstore::server::serve(service, listener, shadow, async {
        let _ = rx.await;
    }));
    Ok((addr.to_string(), Embedded { _stop: tx }))
}
