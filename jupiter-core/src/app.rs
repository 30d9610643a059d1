//! Application lifecycle: start components, serve governance, register once serving, and shut
//! down in order on SIGINT/SIGTERM.
//!
//! # Shutdown order
//!
//! 1. readiness goes to "not ready" (`/health/ready` answers 503);
//! 2. registrations are removed, newest first, so discovery stops sending traffic;
//! 3. a grace delay ([`ShutdownConfig::grace`]) lets clients notice;
//! 4. components are told to stop and drain, under a hard deadline
//!    ([`ShutdownConfig::deadline`]); components still running then are aborted;
//! 5. flush hooks run (telemetry exporters), then the governance server stops.
//!
//! Registration happens only after every component has reported that it is serving.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), jupiter_core::Error> {
//! use jupiter_core::app::{App, component_fn};
//!
//! let app = App::builder("demo").handle_signals(false).governance(None).build();
//! let stop = app.shutdown_handle();
//! let app = app.component(component_fn("worker", |mut ctx| async move {
//!     ctx.ready();
//!     ctx.stopped().await;
//!     Ok(())
//! }));
//! let running = tokio::spawn(app.run());
//! stop.shutdown();
//! running.await.unwrap()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, types};
use crate::error::BoxError;
use crate::governance::{Governance, GovernanceBuilder, Health};
use crate::{Error, metrics::Metrics};

/// The `[app.shutdown]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Pause between deregistering and stopping, so clients stop sending. Default is 2 s.
    #[serde(with = "types::duration")]
    pub grace: Duration,
    /// Hard limit for components to drain. Default is 30 s.
    #[serde(with = "types::duration")]
    pub deadline: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
        }
    }
}

/// The `[app]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AppConfig {
    /// The application's name, used in logs and as the registered service name. Default is
    /// `jupiter`.
    pub name: String,
    /// Deployment mode (environment), part of registry keys. Default is `unknown-mode`, Go
    /// Jupiter's default.
    pub mode: String,
    /// Shutdown timings.
    pub shutdown: ShutdownConfig,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            name: "jupiter".to_owned(),
            mode: crate::registry::DEFAULT_MODE.to_owned(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// Something the app runs: a server, a consumer, a worker.
pub trait Component: Send + 'static {
    /// The component's name, for logs and errors.
    fn name(&self) -> &str;

    /// Runs until [`RunContext::stopped`] resolves, then drains and returns. Must call
    /// [`RunContext::ready`] once it serves (e.g. after binding its listener).
    fn run(self: Box<Self>, ctx: RunContext) -> BoxFuture<'static, Result<(), BoxError>>;
}

/// Handed to a running [`Component`].
#[derive(Debug)]
pub struct RunContext {
    stop: CancellationToken,
    ready: Option<oneshot::Sender<()>>,
}

impl RunContext {
    /// Reports that the component serves. Idempotent.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }

    /// Resolves when the component must stop taking new work and drain.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// The stop token, to hand to servers that take one.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// A component from a name and an async closure.
pub fn component_fn<F, Fut>(name: impl Into<String>, run: F) -> impl Component
where
    F: FnOnce(RunContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    struct FnComponent<F> {
        name: String,
        run: F,
    }
    impl<F, Fut> Component for FnComponent<F>
    where
        F: FnOnce(RunContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        fn name(&self) -> &str {
            &self.name
        }
        fn run(self: Box<Self>, ctx: RunContext) -> BoxFuture<'static, Result<(), BoxError>> {
            Box::pin((self.run)(ctx))
        }
    }
    FnComponent {
        name: name.into(),
        run,
    }
}

/// Registers the process somewhere (a service registry) once it serves, and deregisters it
/// first thing at shutdown.
pub trait Registrar: Send + Sync + 'static {
    /// Registers. Called once every component is ready.
    fn register(&self) -> BoxFuture<'_, Result<(), BoxError>>;
    /// Deregisters. Called at the start of shutdown.
    fn deregister(&self) -> BoxFuture<'_, Result<(), BoxError>>;
}

/// Triggers a graceful shutdown from code (tests, an admin endpoint). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Starts the shutdown sequence.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

type FlushHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// The application: components, registrars, governance, and the shutdown sequence.
#[must_use]
pub struct App {
    name: String,
    governance: Option<GovernanceBuilder>,
    components: Vec<Box<dyn Component>>,
    registrars: Vec<Box<dyn Registrar>>,
    flush: Vec<FlushHook>,
    shutdown: ShutdownConfig,
    health: Health,
    trigger: CancellationToken,
    signals: bool,
    on_governance: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// Builds an [`App`].
#[must_use]
#[derive(Debug)]
pub struct AppBuilder {
    name: String,
    mode: String,
    governance: Option<SocketAddr>,
    governance_token: Option<crate::governance::Token>,
    shutdown: ShutdownConfig,
    signals: bool,
    config: Option<Config>,
    metrics: Option<Metrics>,
}

impl AppBuilder {
    /// Governance server address; `None` runs without one. Default is
    /// [`crate::governance::DEFAULT_ADDR`].
    pub fn governance(mut self, addr: Option<SocketAddr>) -> Self {
        self.governance = addr;
        self
    }

    /// The governance token (see [`crate::governance`]); required off loopback. Default:
    /// none.
    pub fn governance_token(mut self, token: Option<crate::governance::Token>) -> Self {
        self.governance_token = token;
        self
    }

    /// Deployment mode, shown on `/build/info`. Default is Go Jupiter's `unknown-mode`.
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = mode.into();
        self
    }

    /// Shutdown timings. Default is [`ShutdownConfig::default`].
    pub fn shutdown(mut self, shutdown: ShutdownConfig) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Whether SIGINT and SIGTERM start the shutdown. Default is true.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Configuration for `/config`.
    pub fn config(mut self, config: &Config) -> Self {
        self.config = Some(config.clone());
        self
    }

    /// Metrics registry for `/metrics`. Default is [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The app.
    pub fn build(self) -> App {
        let health = Health::default();
        let governance = self.governance.map(|addr| {
            let mut g = Governance::builder()
                .addr(addr)
                .health(&health)
                .token(self.governance_token.clone())
                .app(&self.name, "", &self.mode, env!("CARGO_PKG_VERSION"));
            if let Some(c) = &self.config {
                g = g.config(c);
            }
            if let Some(m) = &self.metrics {
                g = g.metrics(m);
            }
            g
        });
        App {
            name: self.name,
            governance,
            components: Vec::new(),
            registrars: Vec::new(),
            flush: Vec::new(),
            shutdown: self.shutdown,
            health,
            trigger: CancellationToken::new(),
            signals: self.signals,
            on_governance: None,
        }
    }
}

impl App {
    /// A builder from the `[app]` and `[governance]` sections of `config`, which `/config`
    /// will serve.
    ///
    /// # Errors
    ///
    /// Either section is invalid.
    pub fn from_config(config: &Config) -> Result<AppBuilder, Error> {
        let app: AppConfig = config.get("app")?;
        let governance: crate::governance::GovernanceConfig = config.get("governance")?;
        Ok(App::builder(app.name)
            .mode(app.mode)
            .shutdown(app.shutdown)
            .governance(governance.enabled.then_some(governance.addr))
            .governance_token(governance.token)
            .config(config))
    }

    /// A builder for an app called `name`.
    pub fn builder(name: impl Into<String>) -> AppBuilder {
        AppBuilder {
            name: name.into(),
            mode: crate::registry::DEFAULT_MODE.to_owned(),
            governance: Some(crate::governance::DEFAULT_ADDR),
            governance_token: None,
            shutdown: ShutdownConfig::default(),
            signals: true,
            config: None,
            metrics: None,
        }
    }

    /// Adds a component.
    pub fn component(mut self, c: impl Component) -> Self {
        self.components.push(Box::new(c));
        self
    }

    /// Registers the governance server's address with `registry` once serving, under
    /// `/prometheus/job/{app}/{hostname}` for Prometheus's service discovery and Juno (see
    /// [`GovernanceRegistrar`](crate::registry::GovernanceRegistrar)); nothing without a
    /// governance server.
    pub fn register_governance(mut self, registry: Arc<dyn crate::registry::Registry>) -> Self {
        let addr = Arc::new(std::sync::OnceLock::new());
        let set = addr.clone();
        let earlier = self.on_governance.take();
        self.on_governance = Some(Box::new(move |bound| {
            if let Some(f) = earlier {
                f(bound);
            }
            let _ = set.set(bound);
        }));
        let registrar = crate::registry::GovernanceRegistrar::new(registry, &self.name, addr);
        self.registrar(registrar)
    }

    /// Adds a registrar.
    pub fn registrar(mut self, r: impl Registrar) -> Self {
        self.registrars.push(Box::new(r));
        self
    }

    /// Adds a hook run at the end of shutdown (flush telemetry exporters).
    pub fn on_flush<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.flush.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Customizes the governance server (log handle, registry view) before it starts.
    pub fn with_governance(
        mut self,
        f: impl FnOnce(GovernanceBuilder) -> GovernanceBuilder,
    ) -> Self {
        self.governance = self.governance.map(f);
        self
    }

    /// Called with the governance server's address once it is bound (useful with port 0).
    pub fn on_governance_bound(mut self, f: impl FnOnce(SocketAddr) + Send + 'static) -> Self {
        // After any earlier callback (`register_governance` sets one).
        let earlier = self.on_governance.take();
        self.on_governance = Some(Box::new(move |bound| {
            if let Some(e) = earlier {
                e(bound);
            }
            f(bound);
        }));
        self
    }

    /// The health state the governance server reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A handle that starts the shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.trigger.clone())
    }

    /// Runs until a signal, a [`ShutdownHandle`], or a component that stops on its own, then
    /// shuts down in order (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// The governance server could not bind, a component or registrar failed, or the drain
    /// deadline passed. Shutdown runs to the end in every case; the first error is returned.
    pub async fn run(mut self) -> Result<(), Error> {
        // Before anything can report the app as serving: a SIGTERM right after that must
        // start the shutdown, not kill the process.
        let listeners = self.signals.then(install_signals);
        let stop_governance = CancellationToken::new();
        let mut governance_task = None;
        if let Some(builder) = self.governance.take() {
            let bound = builder.build().bind().await?;
            let addr = bound.local_addr();
            tracing::info!(app = %self.name, %addr, "governance server listening");
            if let Some(f) = self.on_governance.take() {
                f(addr);
            }
            let stop = stop_governance.clone();
            governance_task = Some(tokio::spawn(
                bound.serve(async move { stop.cancelled().await }),
            ));
        }

        let drain = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut readies = Vec::new();
        for component in std::mem::take(&mut self.components) {
            let (tx, rx) = oneshot::channel();
            let name = component.name().to_owned();
            let ctx = RunContext {
                stop: drain.child_token(),
                ready: Some(tx),
            };
            readies.push((name.clone(), rx));
            running.spawn(async move { (name.clone(), component.run(ctx).await) });
        }

        let mut first_error: Option<Error> = None;
        let trigger = self.trigger.clone();
        let stop_requested = async move {
            match listeners {
                Some(listeners) => wait_for_signal(&trigger, listeners).await,
                None => trigger.cancelled().await,
            }
        };
        tokio::pin!(stop_requested);

        // Start-up: every component ready, then register.
        let started = async {
            for (name, rx) in readies {
                if rx.await.is_err() {
                    return Err(name);
                }
            }
            Ok(())
        };
        let mut stopped_early = false;
        tokio::select! {
            r = started => match r {
                Ok(()) => {
                    self.health.set_ready(true);
                    tracing::info!(app = %self.name, "all components serving");
                    for r in &self.registrars {
                        if let Err(source) = r.register().await {
                            first_error.get_or_insert(Error::Component { name: "registrar".into(), source });
                            stopped_early = true;
                            break;
                        }
                    }
                }
                Err(name) => {
                    tracing::error!(component = %name, "component stopped before it was ready");
                    stopped_early = true;
                }
            },
            () = &mut stop_requested => stopped_early = true,
        }

        if !stopped_early {
            tokio::select! {
                () = &mut stop_requested => tracing::info!(app = %self.name, "shutdown requested"),
                Some(done) = running.join_next() => {
                    record(&mut first_error, done);
                    tracing::warn!(app = %self.name, "a component stopped; shutting down");
                }
            }
        }

        // 1. Not ready.
        self.health.set_ready(false);
        // 2. Deregister, newest first.
        for r in self.registrars.iter().rev() {
            if let Err(source) = r.deregister().await {
                tracing::warn!(error = %source, "deregistration failed");
                first_error.get_or_insert(Error::Component {
                    name: "registrar".into(),
                    source,
                });
            }
        }
        // 3. Let clients notice.
        tokio::time::sleep(self.shutdown.grace).await;
        // 4. Drain under a deadline.
        drain.cancel();
        let deadline = tokio::time::sleep(self.shutdown.deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = running.join_next() => match done {
                    Some(done) => record(&mut first_error, done),
                    None => break,
                },
                () = &mut deadline => {
                    let left = running.len();
                    tracing::error!(app = %self.name, components = left, "drain deadline passed; aborting");
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    first_error.get_or_insert(Error::Timeout {
                        what: format!("draining {left} component(s)"),
                        after: self.shutdown.deadline,
                    });
                    break;
                }
            }
        }
        // 5. Flush telemetry, stop governance.
        for hook in self.flush.drain(..) {
            hook().await;
        }
        stop_governance.cancel();
        if let Some(task) = governance_task
            && let Ok(Err(e)) = task.await
        {
            first_error.get_or_insert(e);
        }
        tracing::info!(app = %self.name, "stopped");
        first_error.map_or(Ok(()), Err)
    }
}

fn record(
    first: &mut Option<Error>,
    done: Result<(String, Result<(), BoxError>), tokio::task::JoinError>,
) {
    match done {
        Ok((_, Ok(()))) => {}
        Ok((name, Err(source))) => {
            tracing::error!(component = %name, error = %source, "component failed");
            first.get_or_insert(Error::Component { name, source });
        }
        Err(e) if e.is_panic() => {
            first.get_or_insert(Error::Component {
                name: "unknown".into(),
                source: "component panicked".into(),
            });
        }
        Err(_) => {}
    }
}

/// The SIGTERM and SIGINT listeners, installed at once: a signal that arrives before anything
/// awaits them is kept, not left to the default action (which kills the process).
#[cfg(unix)]
type Listeners = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;
#[cfg(not(unix))]
type Listeners = ();

fn install_signals() -> Listeners {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                tracing::warn!(
                    "cannot install signal handlers; only the shutdown handle stops the app"
                );
                None
            }
        }
    }
}

async fn wait_for_signal(trigger: &CancellationToken, listeners: Listeners) {
    #[cfg(unix)]
    {
        let Some((mut term, mut int)) = listeners else {
            trigger.cancelled().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            () = trigger.cancelled() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let () = listeners;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
            () = trigger.cancelled() => {}
        }
    }
}
