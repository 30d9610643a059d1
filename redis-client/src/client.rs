//! The public client handle: one server's pool, or a cluster's router over one pool per node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::metrics::Metrics;
use jupiter_core::shadow::{Access, Route, ShadowPolicy};

use crate::cluster::Router;
use crate::cmd::Cmd;
use crate::cmd::spec::Spec;
use crate::config::{ClientConfig, Settings};
use crate::dedicated::Placement;
use crate::pool::{Pool, PoolOptions};
use crate::resp::Frame;
use crate::tracking::Tracking;
use crate::value::FromReply;
use crate::{Error, Pipeline};

/// A Redis client: multiplexed, auto-pipelined connections to one server or to every node of
/// a Redis Cluster. Cheap to clone (an `Arc` inside); clones share the connections.
///
/// Commands from any number of tasks share the connections: each connection writes whatever
/// is queued in one batch and matches replies in order, so throughput grows with concurrency
/// without a connection per task.
///
/// # One type for both modes
///
/// A standalone client and a cluster client are the same type with the same methods: code
/// written against one runs against the other, and `cluster = true` in the configuration is
/// the only change. (The alternative, a `ClusterClient` sharing the methods through a trait,
/// makes every caller generic or boxed for no gain: the mode is one branch per command, next
/// to a network round trip.) What needs one slot in cluster mode says so with
/// [`Error::CrossSlot`] before anything is sent.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redis_client::Error> {
/// use redis_client::Client;
///
/// let client = Client::connect_url("redis://127.0.0.1:6379").await?;
/// client.set("greeting", "hello").await?;
/// let v: Option<String> = client.get("greeting").await?;
/// assert_eq!(v.as_deref(), Some("hello"));
///
/// let cluster = Client::connect_cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).await?;
/// cluster.set("{user:1}:name", "ada").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// This handle's command timeout (`None`: none); see [`Client::with_timeout`].
    timeout: Option<Duration>,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<Settings>,
    pub(crate) shadow: ShadowPolicy,
    pub(crate) mode: Mode,
    pub(crate) tracking: Option<Tracking>,
}

/// Where commands go.
pub(crate) enum Mode {
    /// One server.
    Single(Arc<Pool>),
    /// A Redis Cluster: by slot, over one pool per node.
    Cluster(Router),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        match &self.inner.mode {
            Mode::Single(pool) => d.field("addr", &pool.addr),
            Mode::Cluster(router) => d.field("cluster", router),
        };
        d.field("pool_size", &self.inner.config.pool_size())
            .finish()
    }
}

/// Builds a [`Client`]. Its `Debug` output never shows a password.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    name: String,
    metrics: Option<Metrics>,
}

impl ClientBuilder {
    /// The server URL. Default is `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: &str) -> Self {
        self.config.url = url.to_owned();
        self
    }

    /// A Redis Cluster, discovered from these seed nodes (any few of its nodes); the first
    /// URL's credentials, protocol and name apply to all. Default: standalone.
    pub fn cluster(mut self, seeds: &[&str]) -> Self {
        self.config.cluster = true;
        self.config.urls = seeds.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// All settings at once (a `[redis.<name>]` section).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// The client's name in metrics (`name` label). Default is `default`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Connections per server. Default is 4 for one server, 1 per cluster node.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.config.pool_size = Some(n);
        self
    }

    /// Deadline of one command, queueing, redirections and retries included
    /// (`Duration::ZERO`: none). Default is 10 s.
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.config.command_timeout = d;
        self
    }

    /// Protocol version. Default is RESP2.
    pub fn protocol(mut self, p: crate::Protocol) -> Self {
        self.config.protocol = p;
        self
    }

    /// Cluster: where read-only commands go. Default is [`ReadFrom::Primary`].
    ///
    /// [`ReadFrom::Primary`]: crate::ReadFrom::Primary
    pub fn read_from(mut self, r: crate::ReadFrom) -> Self {
        self.config.read_from = r;
        self
    }

    /// RESP3 client-side caching; see [`Client::invalidations`]. Default is off.
    pub fn tracking(mut self, mode: crate::TrackingMode, prefixes: &[&str]) -> Self {
        self.config.tracking = mode;
        self.config.tracking_prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Shadow traffic goes to keys with this prefix. Default: none (shadow requests refused).
    pub fn shadow_prefix(mut self, prefix: &str) -> Self {
        self.config.shadow_prefix = Some(prefix.to_owned());
        self
    }

    /// `CLIENT SETNAME` on every connection (reconnections too). Default: none.
    pub fn client_name(mut self, name: &str) -> Self {
        self.config.client_name = Some(name.to_owned());
        self
    }

    /// Metrics registry. Default is [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Builds the client; connections are made (and a cluster's slot map read) in the
    /// background. Commands sent meanwhile wait, under their deadlines.
    ///
    /// # Errors
    ///
    /// Invalid configuration. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let config = Arc::new(self.config.resolve()?);
        let store = format!("redis.{}", self.name);
        let shadow = match &config.shadow_prefix {
            Some(p) => ShadowPolicy::key_prefix(&store, p),
            None => ShadowPolicy::none(&store),
        };
        let registry = self.metrics.unwrap_or_else(|| Metrics::global().clone());
        let tracking = (config.tracking != crate::TrackingMode::Off).then(Tracking::new);
        let options = PoolOptions {
            name: Arc::from(self.name.as_str()),
            metrics: Some(registry),
            events: tracking.as_ref().map(Tracking::events),
        };
        let mode = if config.cluster {
            Mode::Cluster(Router::new(config.clone(), options)?)
        } else {
            Mode::Single(Arc::new(Pool::new(config.clone(), options)))
        };
        Ok(Client {
            timeout: config.timeout(),
            inner: Arc::new(Inner {
                config,
                shadow,
                mode,
                tracking,
            }),
        })
    }

    /// Builds the client and waits until the server (every primary of a cluster) answers
    /// `PING` on every connection.
    ///
    /// # Errors
    ///
    /// Invalid configuration, or the server did not answer within the connect timeout.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build()?;
        client.wait_connected().await?;
        Ok(client)
    }
}

impl Client {
    /// A handle to the same connections whose commands time out after `timeout` instead of
    /// the configured `command-timeout` (zero: never). Cheap: the connections, metrics and
    /// cluster map are shared; only this handle's deadline differs. Blocking commands and
    /// pub/sub keep their own deadlines.
    ///
    /// A caller with a tighter budget than the client's (a cache's L2 lookup, a request
    /// with its own deadline) uses this instead of wrapping each call in a timer: the
    /// connection already tracks one deadline per request.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout: (!timeout.is_zero()).then_some(timeout),
        }
    }

    /// This handle's command timeout (`None`: none).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The deadline of a command this handle starts now.
    pub(crate) fn deadline(&self) -> Option<crate::conn::Deadline> {
        self.timeout.map(crate::conn::Deadline::after)
    }

    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig::default(),
            name: "default".to_owned(),
            metrics: None,
        }
    }

    /// Connects to `url` with the defaults and waits until the server answers.
    ///
    /// # Errors
    ///
    /// An invalid URL, or no answer within the connect timeout.
    pub async fn connect_url(url: &str) -> Result<Client, Error> {
        Client::builder().url(url).connect().await
    }

    /// Connects to the Redis Cluster these seed nodes belong to and waits until every primary
    /// answers.
    ///
    /// # Errors
    ///
    /// An invalid URL, or no seed answered with the cluster's slot map within the connect
    /// timeout.
    pub async fn connect_cluster(seeds: &[&str]) -> Result<Client, Error> {
        Client::builder().cluster(seeds).connect().await
    }

    /// Connects with the `[redis.<name>]` section of `config`.
    ///
    /// # Errors
    ///
    /// The section is invalid ([`Error::ConfigSection`], whose source names the file, line
    /// and key), or the server does not answer.
    pub async fn from_config(config: &jupiter_core::Config, name: &str) -> Result<Client, Error> {
        let section = format!("redis.{name}");
        let parsed: ClientConfig = match config.section(&section) {
            Ok(parsed) => parsed,
            Err(source) => return Err(Error::ConfigSection { section, source }),
        };
        Client::builder().config(parsed).name(name).connect().await
    }

    async fn wait_connected(&self) -> Result<(), Error> {
        let deadline = self.inner.config.connect_timeout + Duration::from_millis(500);
        let pools = match &self.inner.mode {
            Mode::Single(pool) => vec![pool.clone()],
            Mode::Cluster(router) => router.primaries_when_known(deadline).await?,
        };
        for pool in pools {
            for conn in pool.connections() {
                let ping = async {
                    // No retry: a connection the server drops right after the handshake (a
                    // refused TLS client certificate) must surface as that error, not a
                    // timeout.
                    let reply = conn
                        .request(crate::cmds::ping().finish(), 1, false, None)
                        .await?;
                    check(crate::pool::reply_one(reply))
                };
                match tokio::time::timeout(deadline, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e @ Error::Connect { .. })) => return Err(e),
                    Ok(Err(e)) => {
                        return Err(Error::Connect {
                            addr: pool.addr.to_string(),
                            source: Box::new(e),
                        });
                    }
                    Err(_) => {
                        return Err(Error::Connect {
                            addr: pool.addr.to_string(),
                            source: Box::new(Error::Timeout(deadline)),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The server's `host:port` (a cluster's first seed).
    pub fn addr(&self) -> String {
        self.inner.config.addr()
    }

    /// The effective configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config.config
    }

    /// Whether every connection is currently up (in cluster mode: to every primary).
    pub fn is_connected(&self) -> bool {
        match &self.inner.mode {
            Mode::Single(pool) => pool.is_connected(),
            Mode::Cluster(router) => router.is_connected(),
        }
    }

    /// Cluster mode: reads the slot map again now and waits for it (at most the command
    /// timeout). Nothing to do standalone. The router refreshes by itself on redirections,
    /// lost nodes and every `refresh-interval`; this is for callers who know the cluster
    /// changed.
    pub async fn refresh_cluster_map(&self) {
        if let Mode::Cluster(router) = &self.inner.mode {
            router.refresh_now().await;
        }
    }

    /// Whether this is a cluster client.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.mode, Mode::Cluster(_))
    }

    /// Readies a command for the wire, on every path to the server (plain, dedicated,
    /// pipelined): refuses one with an argument that could not be encoded, then applies the
    /// shadow policy. The command as it must be sent, the refusal, or a shadow request for a
    /// command whose spec must first be learned from the server.
    pub(crate) fn route(&self, cmd: Cmd) -> Result<Routed, Error> {
        if let Some(why) = cmd.invalid() {
            return Err(Error::Argument {
                command: cmd.first_word(),
                reason: why.to_owned(),
            });
        }
        let spec = cmd.spec();
        let access = if spec.is_some_and(|s| s.is_readonly()) {
            Access::Read
        } else {
            Access::Write
        };
        match self.inner.shadow.route(access)? {
            Route::Live => Ok(Routed::Ready(cmd)),
            Route::Shadow => {
                let jupiter_core::shadow::ShadowTarget::KeyPrefix(prefix) =
                    self.inner.shadow.target()
                else {
                    return Ok(Routed::Ready(cmd));
                };
                if cmd.is_shadow_mapped() {
                    return Ok(Routed::Ready(cmd));
                }
                let Some(spec) = spec else {
                    return Ok(Routed::Learn(cmd));
                };
                if let Some(reason) = spec.shadow_unmappable() {
                    return Err(Error::ShadowUnmappable {
                        command: spec.name.to_owned(),
                        reason,
                    });
                }
                Ok(Routed::Ready(cmd.with_prefixed_keys(prefix)))
            }
        }
    }

    /// [`route`](Self::route), learning an unknown command's key specs from
    /// `COMMAND INFO` when a shadow request needs them.
    pub(crate) async fn route_learning(&self, cmd: Cmd) -> Result<Cmd, Error> {
        match self.route(cmd)? {
            Routed::Ready(cmd) => Ok(cmd),
            Routed::Learn(cmd) => {
                Box::pin(self.learn_command(&cmd)).await?;
                match self.route(cmd)? {
                    Routed::Ready(cmd) => Ok(cmd),
                    Routed::Learn(cmd) => Err(Error::ShadowUnmappable {
                        command: cmd.first_word(),
                        reason: "the server does not describe it (COMMAND INFO), so its keys are unknown",
                    }),
                }
            }
        }
    }

    /// Asks the server for the spec of `cmd`'s command (live: it touches no key) and keeps it.
    async fn learn_command(&self, cmd: &Cmd) -> Result<(), Error> {
        let name = cmd.first_word();
        let info = crate::cmd::cmd("COMMAND").arg("INFO").arg(name.as_str());
        let frame = self.send(info, None, true).await?;
        crate::cmd::learn(&frame, &[&name]);
        Ok(())
    }

    /// Sends any command and converts its reply.
    ///
    /// # Errors
    ///
    /// A server error reply, a timeout (queueing included), a lost connection, a shadow
    /// refusal, or a reply that does not convert into `T`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future never desynchronizes the connection; the command may
    /// or may not have run.
    pub async fn query<T: FromReply>(&self, cmd: Cmd) -> Result<T, Error> {
        T::from_reply(self.query_frame(cmd).await?)
    }

    /// Sends any command and returns its raw reply (error replies as [`Error::Server`]).
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn query_frame(&self, cmd: Cmd) -> Result<Frame, Error> {
        let spec = cmd.spec();
        match crate::dedicated::placement(&cmd, spec) {
            Placement::Shared => {}
            // Blocking commands would stall every command behind them on a shared connection.
            // Boxed, as the other cold paths below: the hot path's future stays small (every
            // `.await` layer moves its child future into place).
            Placement::Blocking(block) => {
                return Box::pin(async move {
                    let cmd = self.route_learning(cmd).await?;
                    self.blocking_query(cmd, block).await
                })
                .await;
            }
            Placement::Refused(reason) => {
                return Err(Error::Unsupported {
                    command: cmd.first_word(),
                    reason,
                });
            }
        }
        let retry = spec.is_some_and(|s| s.is_readonly());
        // The shadow policy without an await in the common case: a command whose spec must
        // first be learned takes the boxed path.
        let cmd = match self.route(cmd)? {
            Routed::Ready(cmd) => cmd,
            Routed::Learn(cmd) => Box::pin(self.route_learning(cmd)).await?,
        };
        self.send(cmd, spec, retry).await
    }

    /// Sends a routed command to where it must go and checks the reply.
    async fn send(
        &self,
        cmd: Cmd,
        spec: Option<&'static Spec>,
        retry: bool,
    ) -> Result<Frame, Error> {
        match &self.inner.mode {
            Mode::Single(pool) => check(
                pool.call(cmd.finish(), spec, retry, self.deadline())
                    .await?,
            ),
            Mode::Cluster(router) => check(router.query(cmd, spec, retry, self.deadline()).await?),
        }
    }

    /// Sends `cmd` to one node (`SCAN` over a cluster), or where it routes (`None`).
    pub(crate) async fn query_on<T: FromReply>(
        &self,
        target: Option<Arc<Pool>>,
        cmd: Cmd,
    ) -> Result<T, Error> {
        let Some(pool) = target else {
            return self.query(cmd).await;
        };
        let spec = cmd.spec();
        let retry = spec.is_some_and(|s| s.is_readonly());
        let cmd = self.route_learning(cmd).await?;
        let frame = pool
            .call(cmd.finish(), spec, retry, self.deadline())
            .await?;
        T::from_reply(check(frame)?)
    }

    /// The servers a whole-keyspace scan visits: `None` for "wherever the command routes" (a
    /// standalone server), or every primary of a cluster.
    pub(crate) fn scan_targets(&self) -> Vec<Option<Arc<Pool>>> {
        match &self.inner.mode {
            Mode::Single(_) => vec![None],
            Mode::Cluster(router) => router.primaries().into_iter().map(Some).collect(),
        }
    }

    /// Sends several encoded commands as one request on one connection (pipelines and
    /// transactions on a standalone server): they are written together and nothing
    /// interleaves.
    pub(crate) async fn send_many(
        &self,
        pool: &Pool,
        data: Bytes,
        replies: u32,
        retry: bool,
    ) -> Result<Vec<Frame>, Error> {
        pool.call_many(data, replies, retry, self.deadline()).await
    }

    /// A new pipeline: commands sent together, replies returned together. In cluster mode
    /// the commands are split per node and the replies put back in order.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone(), false)
    }

    /// A new `MULTI`/`EXEC` transaction: commands run atomically. In cluster mode every key
    /// must be in one slot.
    pub fn transaction(&self) -> Pipeline {
        Pipeline::new(self.clone(), true)
    }
}

/// What the shadow policy makes of a command.
pub(crate) enum Routed {
    /// Send this.
    Ready(Cmd),
    /// A shadow request for a command neither the table nor earlier learning knows: learn its
    /// spec from the server, then route it again.
    Learn(Cmd),
}

/// Turns an error reply into [`Error::Server`].
pub(crate) fn check(frame: Frame) -> Result<Frame, Error> {
    match frame {
        Frame::Error(e) => Err(Error::Server(e)),
        f => Ok(f),
    }
}
