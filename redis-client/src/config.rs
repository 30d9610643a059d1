//! Client configuration: a `[redis.<name>]` section, a URL, or the builder.

use std::path::PathBuf;
use std::time::Duration;

use jupiter_core::config::types::{ByteSize, duration};
use serde::Deserialize;

use crate::Error;

/// RESP protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// RESP2: every Redis version and proxy speaks it.
    #[default]
    Resp2,
    /// RESP3 (`HELLO 3`, Redis 6+): typed replies and push frames.
    Resp3,
}

/// Default URL.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Where a cluster client sends read-only commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// The slot's primary: reads see every acknowledged write. The default.
    #[default]
    Primary,
    /// A replica of the slot (round robin over its replicas), the primary when none is up.
    /// Reads may lag behind writes by the replication delay.
    PreferReplica,
    /// Round robin over the primary and its replicas.
    RoundRobin,
}

/// RESP3 client-side caching (`CLIENT TRACKING`): the server tells the client when a key
/// it may have cached changes; see [`Client::invalidations`](crate::Client::invalidations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackingMode {
    /// No tracking. The default.
    #[default]
    Off,
    /// The server remembers the keys each connection read and invalidates those.
    Default,
    /// Broadcast: every change to a key under one of `tracking-prefixes` (all keys without
    /// prefixes) is reported, read or not; the server keeps no per-key state.
    Bcast,
}

/// The `[redis.<name>]` section, with every default in place.
///
/// ```toml
/// [redis.main]
/// url = "redis://:secret@127.0.0.1:6379/0"
/// pool-size = 4
/// command-timeout = "2s"
/// protocol = "resp3"
/// shadow-prefix = "shadow:"
///
/// [redis.sessions]
/// cluster = true
/// urls = ["redis://:secret@10.0.0.1:7000", "redis://10.0.0.2:7000"]
/// read-from = "prefer-replica"
/// ```
///
/// Its `Debug` output never shows the password (nor the password part of a URL).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientConfig {
    /// `redis://[user[:password]@]host[:port][/db][?protocol=resp3&name=app]`. Default is
    /// `redis://127.0.0.1:6379`. In cluster mode, one seed node (or use `urls`).
    pub url: String,
    /// Redis Cluster: route commands by slot over the cluster's nodes, discovered from the
    /// seeds (`urls`, or `url`). Default is false.
    pub cluster: bool,
    /// Seed nodes of a cluster (any few of its nodes). The first URL's user, password,
    /// protocol and name apply to every node; all must use the same scheme.
    pub urls: Vec<String>,
    /// Cluster: where read-only commands go. Default is `primary`.
    pub read_from: ReadFrom,
    /// Cluster: how often the slot map is refreshed even when nothing asks for it. Default
    /// is 30 s.
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// Cluster: the least time between two slot-map refreshes (redirections, lost nodes and
    /// timeouts ask for one; they are coalesced, jittered, never a storm). Default is 200 ms.
    #[serde(with = "duration")]
    pub refresh_min_interval: Duration,
    /// Cluster: most `MOVED`/`ASK` redirections one command follows. Default is 16.
    pub max_redirects: u32,
    /// RESP3 client-side caching: `off`, `default` or `bcast`. Default is `off`. Needs
    /// `protocol = "resp3"`.
    pub tracking: TrackingMode,
    /// Key prefixes for `tracking = "bcast"` (none: every key).
    pub tracking_prefixes: Vec<String>,
    /// ACL user; overrides the URL's.
    pub username: Option<String>,
    /// Password; overrides the URL's.
    pub password: Option<String>,
    /// Database number; overrides the URL's when not 0.
    pub db: u32,
    /// Protocol version. Default is `resp2`.
    pub protocol: Protocol,
    /// `CLIENT SETNAME` on every connection.
    pub client_name: Option<String>,
    /// Multiplexed connections per server. Default: 4 for one server (with several
    /// connections in flight the server and the client overlap their work: measured in
    /// `compare redis` on one worker thread, 1 connection ≈ 0.58M ops/s at 64 tasks and 1.13M
    /// at 512, 4 connections ≈ 0.95M and 1.67M; under a moderate load commands gather on
    /// fewer of them, for larger batches, and spread again as it grows), 1 per node of a
    /// cluster (the nodes already overlap; more connections only split each node's batches:
    /// measured on a 6-node cluster at 64 tasks, 1 connection 130k ops/s at 4.3 CPU µs/op, 4
    /// connections 82k at 7.6).
    pub pool_size: Option<usize>,
    /// Deadline of one command, time in the queue included; `0s` means none. Default is 10 s.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Deadline of connecting and the handshake. Default is 3 s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Commands written and awaiting replies, per connection, before new ones wait. Default is
    /// 10000.
    pub max_in_flight: usize,
    /// Commands queued per connection before callers wait (backpressure). Default is 4096.
    pub queue_capacity: usize,
    /// Resend read-only commands that were in flight when a connection broke. Default is true.
    pub retry_reads: bool,
    /// First reconnect delay (jittered, doubling). Default is 100 ms.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default is 5 s.
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// Largest reply accepted. Default is 512 MiB, Redis's own limit.
    pub max_frame: ByteSize,
    /// Where shadow traffic goes: keys prefixed with this. Without it, shadow requests are
    /// refused (shadow traffic must never touch live data).
    pub shadow_prefix: Option<String>,
    /// Record `client_handle_*` metrics per command. Default is true.
    pub metrics: bool,
    /// TLS (feature `tls`): on with this table or a `rediss://` URL.
    pub tls: Option<TlsOptions>,
}

/// The `tls` table of a `[redis.<name>]` section (needs the `tls` feature).
///
/// ```toml
/// [redis.main.tls]
/// ca-file = "/etc/redis/ca.pem"      # default: Mozilla's root certificates
/// cert-file = "/etc/app/client.pem"  # for servers with tls-auth-clients
/// key-file = "/etc/app/client.key"
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with the CA certificates that sign the server's certificate. Default:
    /// Mozilla's roots (webpki-roots), the same on every machine.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain to present, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert-file`.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry. Default: the URL's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("ClientConfig")
            .field("url", &redact(&self.url))
            .field("cluster", &self.cluster)
            .field("urls", &urls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("protocol", &self.protocol)
            .field("client_name", &self.client_name)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_from", &self.read_from)
            .field("tracking", &self.tracking)
            .field("shadow_prefix", &self.shadow_prefix)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A checked configuration with its URL parsed: what connections use. One per server: a
/// cluster client derives one per node ([`Settings::for_node`]).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) config: ClientConfig,
    host: String,
    port: u16,
    /// Cluster seeds, `url`'s first (empty for a standalone client).
    pub(crate) seeds: Vec<(String, u16)>,
    /// Requests to a server that is down fail at once instead of waiting for the reconnect
    /// (cluster nodes: the router sends them elsewhere).
    pub(crate) fail_fast: bool,
    /// Send `READONLY` in the handshake (cluster replicas serving reads).
    pub(crate) readonly: bool,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::conn::tls::Tls>,
}

impl std::ops::Deref for Settings {
    type Target = ClientConfig;

    fn deref(&self) -> &ClientConfig {
        &self.config
    }
}

impl Settings {
    /// `host:port` of the server.
    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connections per server.
    pub(crate) fn pool_size(&self) -> usize {
        self.config
            .pool_size
            .unwrap_or(if self.config.cluster { 1 } else { 4 })
    }

    /// The command timeout, if any.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        (!self.command_timeout.is_zero()).then_some(self.command_timeout)
    }

    /// The deadline of a command starting now.
    pub(crate) fn deadline(&self) -> Option<crate::conn::Deadline> {
        self.timeout().map(crate::conn::Deadline::after)
    }

    /// The same settings for another node of the cluster: same credentials, protocol and
    /// TLS (the certificate checked against that node's host unless `server-name` is set).
    pub(crate) fn for_node(&self, host: &str, port: u16) -> Result<Settings, Error> {
        Ok(Settings {
            config: self.config.clone(),
            host: host.to_owned(),
            port,
            seeds: Vec::new(),
            fail_fast: true,
            readonly: self.config.read_from != ReadFrom::Primary,
            #[cfg(feature = "tls")]
            tls: match &self.tls {
                Some(tls) => Some(
                    tls.for_host(
                        self.config
                            .tls
                            .as_ref()
                            .and_then(|t| t.server_name.as_deref())
                            .unwrap_or(host),
                    )?,
                ),
                None => None,
            },
        })
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            url: DEFAULT_URL.to_owned(),
            username: None,
            password: None,
            db: 0,
            protocol: Protocol::Resp2,
            client_name: None,
            pool_size: None,
            command_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_in_flight: 10_000,
            queue_capacity: 4096,
            retry_reads: true,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            max_frame: ByteSize(512 * 1024 * 1024),
            shadow_prefix: None,
            metrics: true,
            tls: None,
            cluster: false,
            urls: Vec::new(),
            read_from: ReadFrom::Primary,
            refresh_interval: Duration::from_secs(30),
            refresh_min_interval: Duration::from_millis(200),
            max_redirects: 16,
            tracking: TrackingMode::Off,
            tracking_prefixes: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Defaults with `url`.
    ///
    /// # Errors
    ///
    /// The URL is invalid.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let config = ClientConfig {
            url: url.to_owned(),
            ..ClientConfig::default()
        };
        Ok(config.resolve()?.config)
    }

    /// Parses the URL and checks every value; explicit fields win over the URL's.
    pub(crate) fn resolve(mut self) -> Result<Settings, Error> {
        if !self.urls.is_empty() && !self.cluster {
            return Err(Error::config(
                "urls",
                "seed URLs are for a cluster; set cluster = true (or use url)",
            ));
        }
        if self.cluster && self.urls.is_empty() {
            self.urls.push(self.url.clone());
        }
        let first = self
            .urls
            .first()
            .cloned()
            .unwrap_or_else(|| self.url.clone());
        let url = parse_url(&first)?;
        let mut seeds = Vec::new();
        for other in &self.urls {
            let seed = parse_url(other)?;
            if seed.tls != url.tls {
                return Err(Error::config(
                    "urls",
                    "every seed must use the same scheme (redis:// or rediss://)",
                ));
            }
            seeds.push((seed.host, seed.port));
        }
        if self.username.is_none() {
            self.username = url.username;
        }
        if self.password.is_none() {
            self.password = url.password;
        }
        if self.db == 0 {
            self.db = url.db;
        }
        if url.tls && self.tls.is_none() {
            self.tls = Some(TlsOptions::default());
        }
        if let Some(p) = url.protocol {
            self.protocol = p;
        }
        if self.client_name.is_none() {
            self.client_name = url.name;
        }
        let bad = |key: &'static str, msg: &str| Err(Error::config(key, msg));
        if self.cluster && self.db != 0 {
            return bad("db", "a cluster has only database 0");
        }
        if self.cluster && self.max_redirects == 0 {
            return bad("max-redirects", "must be at least 1");
        }
        if self.cluster && self.refresh_min_interval.is_zero() {
            return bad("refresh-min-interval", "must be more than 0s");
        }
        if self.tracking != TrackingMode::Off && self.protocol != Protocol::Resp3 {
            return bad(
                "tracking",
                "client tracking delivers invalidations as RESP3 pushes; set protocol = \"resp3\"",
            );
        }
        if self.tracking != TrackingMode::Bcast && !self.tracking_prefixes.is_empty() {
            return bad("tracking-prefixes", "only with tracking = \"bcast\"");
        }
        if self.pool_size == Some(0) {
            return bad("pool-size", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max-in-flight", "must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue-capacity", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect-timeout", "must be more than 0s");
        }
        if self.reconnect_min > self.reconnect_max {
            return bad("reconnect-min", "must not exceed reconnect-max");
        }
        if self.max_frame.bytes() < 1024 {
            return bad("max-frame", "must be at least 1KiB");
        }
        if let Some(name) = &self.client_name
            && (name.is_empty() || name.bytes().any(|b| b == b' ' || !b.is_ascii_graphic()))
        {
            return bad(
                "client-name",
                "must be non-empty, printable, without spaces",
            );
        }
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(options) => Some(crate::conn::tls::Tls::new(options, &url.host)?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        if self.tls.is_some() {
            return bad(
                "tls",
                "TLS (a tls table or rediss://) needs redis-client's `tls` feature",
            );
        }
        let readonly = self.cluster && self.read_from != ReadFrom::Primary;
        Ok(Settings {
            config: self,
            host: url.host,
            port: url.port,
            seeds,
            fail_fast: false,
            readonly,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// Checks the configuration: every value, and the URL.
    ///
    /// # Errors
    ///
    /// The URL or a value is invalid; the message names the key.
    pub fn validate(&self) -> Result<(), Error> {
        self.clone().resolve().map(drop)
    }
}

struct Url {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: u32,
    protocol: Option<Protocol>,
    name: Option<String>,
}

fn parse_url(url: &str) -> Result<Url, Error> {
    let bad = |msg: String| Err(Error::config("url", format!("{:?}: {msg}", redact(url))));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("expected redis://host:port".into());
    };
    let tls = match scheme {
        "redis" => false,
        "rediss" => true,
        other => {
            return bad(format!(
                "unknown scheme {other:?}; use redis:// or rediss://"
            ));
        }
    };
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .map_or((None, authority), |(u, h)| (Some(u), h));
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                Some(percent_decode(user)?).filter(|s| !s.is_empty()),
                Some(percent_decode(pass)?),
            ),
            None => (Some(percent_decode(u)?), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, p)) = v6.split_once(']') else {
            return bad("unclosed [ in IPv6 host".into());
        };
        (h.to_owned(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p),
            None => (hostport.to_owned(), ""),
        }
    };
    if host.is_empty() {
        return bad("missing host".into());
    }
    let port = if port.is_empty() {
        6379
    } else {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return bad(format!("invalid port {port:?}")),
        }
    };
    let db = if path.is_empty() {
        0
    } else {
        match path.parse() {
            Ok(db) => db,
            Err(_) => return bad(format!("invalid database {path:?}")),
        }
    };
    let (mut protocol, mut name) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("protocol", "resp2" | "2")) => protocol = Some(Protocol::Resp2),
            Some(("protocol", "resp3" | "3")) => protocol = Some(Protocol::Resp3),
            Some(("name" | "client_name", n)) => name = Some(percent_decode(n)?),
            _ => return bad(format!("unknown parameter {pair:?}; known: protocol, name")),
        }
    }
    Ok(Url {
        tls,
        host,
        port,
        username,
        password,
        db,
        protocol,
        name,
    })
}

fn percent_decode(s: &str) -> Result<String, Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = hex else {
                return Err(Error::config("url", "bad percent-encoding"));
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::config("url", "percent-encoding is not UTF-8"))
}

/// The URL with its password replaced, for error messages.
pub(crate) fn redact(url: &str) -> String {
    jupiter_core::config::redact_url(url).unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built without the `tls` feature (the test command runs this crate's unit tests so
    /// once), TLS asked for by a URL or a table is refused by name, before any connection.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        for config in [
            ClientConfig {
                url: "rediss://127.0.0.1:6380".into(),
                ..ClientConfig::default()
            },
            ClientConfig {
                tls: Some(TlsOptions::default()),
                ..ClientConfig::default()
            },
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains("tls") && e.contains("feature"), "{e}");
        }
    }

    #[test]
    fn urls() {
        let url = "redis://app:p%40ss@10.0.0.1:6380/3?protocol=resp3&name=orders";
        let c = ClientConfig {
            url: url.into(),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.addr(), "10.0.0.1:6380");
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.db, 3);
        assert_eq!(c.protocol, Protocol::Resp3);
        assert_eq!(c.client_name.as_deref(), Some("orders"));
        let c = ClientConfig {
            url: "redis://:only@[::1]".into(),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (
                c.addr().as_str(),
                c.username.as_deref(),
                c.password.as_deref()
            ),
            ("[::1]:6379", None, Some("only"))
        );
        for bad in [
            "localhost:6379",
            "http://x",
            "redis://",
            "redis://h:0",
            "redis://h:x",
            "redis://h/abc",
            "redis://h?tls=1",
        ] {
            assert!(ClientConfig::from_url(bad).is_err(), "{bad}");
        }
        let err = ClientConfig::from_url("redis://u:secret@h:99999")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn explicit_fields_win_and_bad_values_name_the_key() {
        let c = ClientConfig {
            url: "redis://u:a@h/1".into(),
            password: Some("b".into()),
            db: 2,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!((c.password.as_deref(), c.db), (Some("b"), 2));
        let err = ClientConfig {
            pool_size: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis config: pool-size: must be at least 1"
        );
    }
}
