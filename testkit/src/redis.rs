//! `redis-server` standalone and as a 6-node cluster.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{Proc, find_binary};
use crate::resp::{Conn, Reply, info_field};
use crate::{Error, ports};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 5;

/// One `redis-server` process: a standalone server or a cluster node.
#[derive(Debug)]
pub struct RedisNode {
    proc: Proc,
    addr: SocketAddr,
    bus_port: Option<u16>,
    tls_port: Option<u16>,
    name: String,
}

impl RedisNode {
    /// Starts a node in `dir` with `extra` config pairs (and a `tls-port` of its own when
    /// `tls`), retrying with new ports when the chosen ones turn out to be taken.
    fn spawn(
        binary: &str,
        dir: &Path,
        name: &str,
        cluster: bool,
        tls: bool,
        extra: &[(String, Vec<String>)],
    ) -> Result<RedisNode, Error> {
        let program = find_binary(binary)?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = ports::free_port()?;
            let bus_port = if cluster {
                Some(ports::free_port()?)
            } else {
                None
            };
            let tls_port = if tls { Some(ports::free_port()?) } else { None };
            let mut args: Vec<OsString> = Vec::new();
            let mut set = |k: &str, v: &str| {
                args.push(format!("--{k}").into());
                args.push(v.into());
            };
            set("port", &port.to_string());
            if let Some(p) = tls_port {
                set("tls-port", &p.to_string());
            }
            set("bind", "127.0.0.1");
            set("save", "");
            set("appendonly", "no");
            set("dir", &dir.display().to_string());
            set("daemonize", "no");
            set("logfile", "");
            set("dbfilename", &format!("{name}.rdb"));
            if let Some(bus) = bus_port {
                set("cluster-enabled", "yes");
                set("cluster-port", &bus.to_string());
                set("cluster-config-file", &format!("{name}-nodes.conf"));
                set("cluster-node-timeout", "1500");
                set("repl-diskless-sync-delay", "0");
            }
            for (k, words) in extra {
                args.push(format!("--{k}").into());
                args.extend(words.iter().map(OsString::from));
            }
            let node = RedisNode {
                proc: Proc::new(program.clone(), args, dir.join(format!("{name}.log"))),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                bus_port,
                tls_port,
                name: name.to_owned(),
            };
            node.proc.start()?;
            match node.wait_ready() {
                Ok(()) => return Ok(node),
                // Exited at once: most likely the port was taken in the meantime. Retry.
                Err(e) if node.proc.exited().is_some() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("redis-server did not start".into())))
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let not_ready = |reason: String| Error::NotReady {
            what: format!("redis-server {} on {}", self.name, self.addr),
            reason,
            log: self.proc.log_tail(),
        };
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(not_ready(format!("exited with {status}")));
            }
            // Any reply (even NOAUTH) means the server is accepting commands.
            if Conn::connect(self.addr, Duration::from_millis(200))
                .and_then(|mut c| c.command(&["PING"]))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(not_ready(format!(
                    "no reply to PING within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The TLS port (nodes of a cluster built with [`RedisClusterBuilder::tls_ports`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Cluster bus port (cluster nodes only).
    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    crate::process::process_controls!();

    /// Whether the process is paused.
    pub fn is_paused(&self) -> bool {
        self.proc.is_paused()
    }

    /// Sends one command on a new connection.
    pub fn command<S: AsRef<[u8]>>(&self, args: &[S]) -> Result<Reply, Error> {
        crate::resp::command(self.addr, args)
    }

    /// `master` or `slave`, from `ROLE`.
    pub fn role(&self) -> Result<String, Error> {
        match self.command(&["ROLE"])? {
            Reply::Array(Some(items)) => items
                .first()
                .and_then(Reply::text)
                .ok_or_else(|| Error::Protocol("empty ROLE reply".into())),
            other => Err(Error::Protocol(format!("unexpected ROLE reply {other:?}"))),
        }
    }

    /// Waits until `ROLE` reports `role` (`master` or `slave`), e.g. for a replica to be
    /// promoted after its master was killed.
    pub fn wait_role(&self, role: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.role() {
                Ok(r) if r == role => return Ok(()),
                Ok(r) if Instant::now() > deadline => {
                    return Err(Error::Protocol(format!(
                        "{} is still {r} after {timeout:?}, expected {role}",
                        self.addr
                    )));
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn text(&self, args: &[&str]) -> Result<String, Error> {
        let reply = self.command(args)?;
        reply.text().filter(|_| !reply.is_error()).ok_or_else(|| {
            Error::Protocol(format!(
                "{} {args:?}: unexpected reply {reply:?}",
                self.addr
            ))
        })
    }

    fn expect_ok(&self, args: &[&str]) -> Result<(), Error> {
        match self.command(args)? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(Error::Protocol(format!(
                "{} {args:?}: {other:?}",
                self.addr
            ))),
        }
    }
}

/// A standalone `redis-server` without persistence, on a free loopback port, in its own temp
/// dir. Stopped and cleaned up on drop.
///
/// Dereferences to [`RedisNode`] for the address and the fault controls.
///
/// # Examples
///
/// ```no_run
/// let redis = testkit::RedisServer::start();
/// let reply = redis.command(&["SET", "k", "v"]).unwrap();
/// assert_eq!(reply, testkit::Reply::Simple("OK".into()));
/// ```
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the process (killed when dropped) goes before its directory.
    node: RedisNode,
    dir: TempDir,
}

/// Options for a [`RedisServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBuilder {
    binary: String,
    config: Vec<(String, Vec<String>)>,
}

impl RedisBuilder {
    /// Adds a config directive, e.g. `("requirepass", "secret")`.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), vec![value.to_owned()]));
        self
    }

    /// Adds a directive of several words, e.g. `("rename-command", &["SET", "PUTVAL"])`.
    pub fn config_words(mut self, key: &str, words: &[&str]) -> Self {
        self.config.push((
            key.to_owned(),
            words.iter().map(|w| (*w).to_owned()).collect(),
        ));
        self
    }

    /// The server binary (a name looked up in `PATH`, or a path). Default is `redis-server`.
    pub fn binary(mut self, binary: &str) -> Self {
        self.binary = binary.to_owned();
        self
    }

    /// Starts the server.
    ///
    /// # Panics
    ///
    /// The binary is missing (the message names it and the install command) or the server does
    /// not start.
    pub fn start(self) -> RedisServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server, returning errors.
    pub fn try_start(self) -> Result<RedisServer, Error> {
        let dir = tempdir("redis")?;
        let node = RedisNode::spawn(
            &self.binary,
            dir.path(),
            "redis",
            false,
            false,
            &self.config,
        )?;
        Ok(RedisServer { node, dir })
    }
}

impl RedisServer {
    /// Options.
    pub fn builder() -> RedisBuilder {
        RedisBuilder {
            binary: "redis-server".into(),
            config: Vec::new(),
        }
    }

    /// Starts a server with the defaults.
    ///
    /// # Panics
    ///
    /// As [`RedisBuilder::start`].
    pub fn start() -> RedisServer {
        Self::builder().start()
    }

    /// Starts a server with the defaults, returning errors.
    pub fn try_start() -> Result<RedisServer, Error> {
        Self::builder().try_start()
    }

    /// The server's working directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl std::ops::Deref for RedisServer {
    type Target = RedisNode;

    fn deref(&self) -> &RedisNode {
        &self.node
    }
}

/// A Redis Cluster of 6 nodes on loopback: 3 masters with 5461/5461/5462 slots, each with one
/// replica. `cluster-node-timeout` is 1.5 s, so a killed master fails over within seconds.
///
/// # Examples
///
/// ```no_run
/// let cluster = testkit::RedisCluster::start();
/// assert_eq!(cluster.nodes().len(), 6);
/// let seeds = cluster.seed_addrs();
/// # let _ = seeds;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
    _dir: TempDir,
}

/// Options for a [`RedisCluster`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisClusterBuilder {
    config: Vec<(String, Vec<String>)>,
    tls: bool,
}

impl RedisClusterBuilder {
    /// Adds a config directive for every node, e.g. `("tls-cluster", "yes")`.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), vec![value.to_owned()]));
        self
    }

    /// Gives every node a `tls-port` of its own besides its plain port (the certificate
    /// directives come through [`config`](Self::config)); testkit keeps to the plain ports.
    pub fn tls_ports(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts and forms the cluster, as [`RedisCluster::start`].
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start`].
    pub fn start(self) -> RedisCluster {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start) returning errors.
    pub fn try_start(self) -> Result<RedisCluster, Error> {
        let dir = tempdir("redis-cluster")?;
        let nodes = (0..6)
            .map(|i| {
                RedisNode::spawn(
                    "redis-server",
                    dir.path(),
                    &format!("node{i}"),
                    true,
                    self.tls,
                    &self.config,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.form()?;
        Ok(cluster)
    }
}

impl RedisCluster {
    /// Starts the cluster and waits until every node reports `cluster_state:ok` and every master
    /// has its replica in sync.
    ///
    /// # Panics
    ///
    /// The binary is missing or the cluster does not form.
    pub fn start() -> RedisCluster {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start) returning errors.
    pub fn try_start() -> Result<RedisCluster, Error> {
        Self::builder().try_start()
    }

    /// Options: config directives for every node, TLS ports.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder {
            config: Vec::new(),
            tls: false,
        }
    }

    fn form(&self) -> Result<(), Error> {
        const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (lo, hi)) in self.nodes.iter().zip(RANGES) {
            node.expect_ok(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()])?;
        }
        let first = &self.nodes[0];
        let bus = first.bus_port.expect("cluster node").to_string();
        for node in &self.nodes[1..] {
            node.expect_ok(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &first.port().to_string(),
                &bus,
            ])?;
        }
        self.wait_until(
            Duration::from_secs(20),
            "all nodes to know each other",
            |n| {
                Ok(
                    info_field(&n.text(&["CLUSTER", "INFO"])?, "cluster_known_nodes").as_deref()
                        == Some("6"),
                )
            },
        )?;
        for i in 0..3 {
            let master_id = self.nodes[i].text(&["CLUSTER", "MYID"])?;
            let replica = &self.nodes[i + 3];
            // The replica may not have learnt the master's id through gossip yet.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match replica.command(&["CLUSTER", "REPLICATE", &master_id])? {
                    Reply::Simple(s) if s == "OK" => break,
                    other if Instant::now() > deadline => {
                        return Err(Error::Protocol(format!(
                            "CLUSTER REPLICATE on {}: {other:?}",
                            replica.addr
                        )));
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.wait_ok(Duration::from_secs(30))?;
        // Every node's own view: three primaries, three replicas (gossip takes a moment to
        // tell every node who replicates whom; a client reading the map from a node that does
        // not know yet would miss a replica).
        self.wait_until(
            Duration::from_secs(30),
            "every node to see 3 replicas",
            |n| {
                let nodes = n.text(&["CLUSTER", "NODES"])?;
                let role = |r: &str| {
                    nodes
                        .lines()
                        .filter(|l| {
                            l.split(' ')
                                .nth(2)
                                .is_some_and(|f| f.split(',').any(|x| x == r))
                        })
                        .count()
                };
                Ok(role("master") == 3 && role("slave") == 3)
            },
        )?;
        self.wait_until(Duration::from_secs(30), "replicas to sync", |n| {
            let repl = n.text(&["INFO", "replication"])?;
            Ok(match info_field(&repl, "role").as_deref() {
                Some("master") => info_field(&repl, "connected_slaves").as_deref() == Some("1"),
                _ => info_field(&repl, "master_link_status").as_deref() == Some("up"),
            })
        })
    }

    fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&RedisNode) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut pending = None;
            for n in self
                .nodes
                .iter()
                .filter(|n| n.is_running() && !n.is_paused())
            {
                match check(n) {
                    Ok(true) => {}
                    Ok(false) => pending = Some((n, "not yet".to_owned())),
                    Err(e) => pending = Some((n, e.to_string())),
                }
            }
            let Some((node, why)) = pending else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("redis cluster node {} ({})", node.name, node.addr),
                    reason: format!("waited {timeout:?} for {what}: {why}"),
                    log: node.proc.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running, unpaused node reports `cluster_state:ok` with all 16384 slots
    /// served (after a fault: a replica has been promoted).
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), Error> {
        self.wait_until(timeout, "cluster_state:ok", |n| {
            let info = n.text(&["CLUSTER", "INFO"])?;
            Ok(info_field(&info, "cluster_state").as_deref() == Some("ok")
                && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384"))
        })
    }

    /// All six nodes, in creation order (0–2 started as masters, 3–5 as their replicas).
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// Running nodes that currently are masters.
    pub fn masters(&self) -> Vec<&RedisNode> {
        self.by_role("master")
    }

    /// Running nodes that currently are replicas.
    pub fn replicas(&self) -> Vec<&RedisNode> {
        self.by_role("slave")
    }

    fn by_role(&self, role: &str) -> Vec<&RedisNode> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_paused() && n.role().is_ok_and(|r| r == role))
            .collect()
    }

    /// Waits until every running, unpaused node's `CLUSTER NODES` shows the node `id` with
    /// (`failed = true`) or without the `fail` flag: failure detection (`cluster-node-timeout`
    /// and the majority's agreement) has run, or a returned node has been cleared.
    pub fn wait_failed(&self, id: &str, failed: bool, timeout: Duration) -> Result<(), Error> {
        let what = if failed {
            "flagged fail"
        } else {
            "fail flag cleared"
        };
        self.wait_until(timeout, &format!("node {id} {what}"), |n| {
            let nodes = n.text(&["CLUSTER", "NODES"])?;
            let line = nodes
                .lines()
                .find(|l| l.split(' ').next() == Some(id))
                .ok_or_else(|| Error::Protocol(format!("node {id} not in CLUSTER NODES")))?;
            let flags = line.split(' ').nth(2).unwrap_or("");
            Ok(flags.split(',').any(|f| f == "fail") == failed)
        })
    }

    /// The node's cluster id (`CLUSTER MYID`).
    pub fn node_id(&self, node: &RedisNode) -> Result<String, Error> {
        node.text(&["CLUSTER", "MYID"])
    }

    /// The running primary that serves `slot`, as `CLUSTER SHARDS` on any node reports it.
    pub fn master_of(&self, slot: u16) -> Result<&RedisNode, Error> {
        for node in self.masters() {
            if let Reply::Array(Some(ranges)) = node.command(&["CLUSTER", "SLOTS"])? {
                let me = node.port() as i64;
                for r in ranges {
                    let Reply::Array(Some(items)) = r else {
                        continue;
                    };
                    let (Some(Reply::Integer(lo)), Some(Reply::Integer(hi))) =
                        (items.first(), items.get(1))
                    else {
                        continue;
                    };
                    let owner = match items.get(2) {
                        Some(Reply::Array(Some(n))) => n.get(1).cloned(),
                        _ => None,
                    };
                    if (*lo..=*hi).contains(&i64::from(slot)) && owner == Some(Reply::Integer(me)) {
                        return Ok(node);
                    }
                }
            }
        }
        Err(Error::Protocol(format!(
            "no running primary serves slot {slot}"
        )))
    }

    /// Live resharding, as `redis-cli --cluster reshard` does it: for each slot, `CLUSTER
    /// SETSLOT … IMPORTING` on `to` and `… MIGRATING` on `from`, the keys moved with `MIGRATE`
    /// in batches of `batch`, then `CLUSTER SETSLOT … NODE` on every primary. Clients keep
    /// running meanwhile and see `ASK`, `TRYAGAIN` and `MOVED`.
    pub fn move_slots(
        &self,
        slots: impl IntoIterator<Item = u16>,
        from: &RedisNode,
        to: &RedisNode,
        batch: usize,
    ) -> Result<(), Error> {
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        let to_port = to.port().to_string();
        for slot in slots {
            let s = slot.to_string();
            to.expect_ok(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])?;
            from.expect_ok(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])?;
            loop {
                let keys =
                    match from.command(&["CLUSTER", "GETKEYSINSLOT", &s, &batch.to_string()])? {
                        Reply::Array(Some(keys)) => {
                            keys.iter().filter_map(Reply::text).collect::<Vec<_>>()
                        }
                        other => {
                            return Err(Error::Protocol(format!("GETKEYSINSLOT {s}: {other:?}")));
                        }
                    };
                if keys.is_empty() {
                    break;
                }
                let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
                args.extend(keys.iter().map(String::as_str));
                match from.command(&args)? {
                    Reply::Simple(_) => {}
                    other => return Err(Error::Protocol(format!("MIGRATE slot {s}: {other:?}"))),
                }
            }
            // The new owner first (it stops answering ASK-only), then the others.
            to.expect_ok(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])?;
            from.expect_ok(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])?;
            for node in self.masters() {
                if node.port() != to.port() && node.port() != from.port() {
                    node.expect_ok(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id])?;
                }
            }
        }
        Ok(())
    }

    /// Addresses of all nodes, to seed a cluster client.
    pub fn seed_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisNode::addr).collect()
    }

    /// `redis://` URLs of all nodes, to seed a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill();
        }
    }
}

pub(crate) fn tempdir(what: &str) -> Result<TempDir, Error> {
    tempfile::Builder::new()
        .prefix(&format!("testkit-{what}-"))
        .tempdir()
        .map_err(|e| Error::io("create temp dir", e))
}
