//! Many objstore nodes as one store: nodes found through jupiter-core's registry, keys spread
//! by rendezvous hashing, optional replication by the client. No consensus of our own: each
//! node is an independent objstore; the registry (etcd in production) says which exist.
//!
//! # Placement: rendezvous (highest random weight) hashing
//!
//! A key's owners are the `replicas` nodes with the highest `score(node, key)`. Why rendezvous
//! rather than a ring with virtual nodes:
//! - movement is minimal by construction: when a node joins, exactly the keys it now wins move
//!   (to it), about 1/N of them; when one leaves, exactly its keys move, spread over the rest;
//! - balance needs no tuning: with a ring, balance depends on the number of virtual nodes (100
//!   per node gives about ±10 %); here each key picks independently, so the spread is the
//!   binomial one (measured in the tests: 100 000 keys over 5 nodes, every node within 3 % of
//!   the mean);
//! - the R owners of a key are simply the R best scores, distinct by construction;
//! - the cost, one hash per node per call, is nothing next to a network call at the node
//!   counts objstore runs at (tens).
//!
//! The score hashes with FNV-1a and a SplitMix64 finalizer, written out here so that every
//! client, of any version, places a key on the same nodes (std's hasher may change between
//! Rust releases).
//!
//! # Replication (`replicas` R, `write_quorum` W)
//!
//! Writes (`put`, `delete`) go to the key's R owners at once and succeed when W of them
//! acknowledged. Reads go to the owners in placement order and return the first copy found (a
//! node that is down, or answers unavailable, is passed over; a "not found" is the answer only
//! when every owner that is up gives it). With R = 2 and one node lost, every key stays
//! readable. There is no repair: a node that comes back empty, or missed writes while down,
//! keeps what it has until the keys are written again; and after the node set changes, a key
//! whose owners all changed is found only by listing (`list_all` asks every node) until it is
//! written again.
//!
//! # Following the registry
//!
//! [`ClusterClient::discover`] watches the service's instances; a node that registers is used
//! from the next call on, one whose lease ends is dropped. The watch task holds the client's
//! state weakly: dropping the last [`ClusterClient`] ends it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use jupiter_core::registry::{Instances, Registry, Target};
use tokio::sync::watch;

use crate::client::{Client, ClientConfig, DeleteOptions, Info, Object, PutOptions};
use crate::error::Error;

/// How a [`ClusterClient`] finds and uses its nodes.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The service name the nodes register under (their `[app] name`). Default `objstore`.
    pub service: String,
    /// Their deployment mode (`[app] mode`). Default Go Jupiter's `unknown-mode`.
    pub mode: String,
    /// Copies of each key (R). Default 1.
    pub replicas: usize,
    /// Acknowledgements a write needs (W, 1 to R). Default: R.
    pub write_quorum: Option<usize>,
    /// Each node's client settings.
    pub client: ClientConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service: "objstore".into(),
            mode: jupiter_core::registry::DEFAULT_MODE.into(),
            replicas: 1,
            write_quorum: None,
            client: ClientConfig::default(),
        }
    }
}

/// One node: its address, the hash of its name, its client.
#[derive(Clone)]
struct Node {
    addr: String,
    seed: u64,
    client: Client,
}

struct Shared {
    /// The nodes in use; a watch so callers can wait for a change.
    nodes: watch::Sender<Arc<Vec<Node>>>,
    replicas: usize,
    write_quorum: usize,
    client: ClientConfig,
}

/// Many objstore nodes as one store (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("nodes", &self.nodes())
            .field("replicas", &self.shared.replicas)
            .field("write_quorum", &self.shared.write_quorum)
            .finish()
    }
}

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of a node (by its seed) for a key (by its hash).
fn score(seed: u64, key_hash: u64) -> u64 {
    mix(seed ^ key_hash)
}

/// The indices of `key`'s `r` owners among nodes of `seeds`, best first.
pub fn owners(seeds: &[u64], key: &[u8], r: usize) -> Vec<usize> {
    let h = fnv(key);
    let mut ranked: Vec<(u64, usize)> = seeds
        .iter()
        .enumerate()
        .map(|(i, &s)| (score(s, h), i))
        .collect();
    // Highest score first; ties (astronomically rare) by index, so every client agrees.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().take(r).map(|(_, i)| i).collect()
}

/// A node's seed: the hash of its address, so every client ranks the same way.
pub fn seed(addr: &str) -> u64 {
    mix(fnv(addr.as_bytes()))
}

impl ClusterClient {
    fn with(config: &ClusterConfig) -> Result<ClusterClient, Error> {
        let replicas = config.replicas;
        if replicas == 0 {
            return Err(Error::Invalid("replicas must be at least 1".into()));
        }
        let write_quorum = config.write_quorum.unwrap_or(replicas);
        if write_quorum == 0 || write_quorum > replicas {
            return Err(Error::Invalid(format!(
                "write quorum must be 1 to {replicas} (the replicas), not {write_quorum}"
            )));
        }
        Ok(ClusterClient {
            shared: Arc::new(Shared {
                nodes: watch::Sender::new(Arc::new(Vec::new())),
                replicas,
                write_quorum,
                client: config.client.clone(),
            }),
        })
    }

    /// A client over a fixed set of node addresses.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad replica count or quorum, or an address a client cannot be
    /// made for.
    pub fn from_addresses(addrs: &[&str], config: ClusterConfig) -> Result<ClusterClient, Error> {
        let c = ClusterClient::with(&config)?;
        c.shared
            .set(addrs.iter().map(|a| (*a).to_owned()).collect())?;
        Ok(c)
    }

    /// A client over the nodes `registry` lists for `config.service` (scheme `grpc`), following
    /// them as they come and go. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The registry cannot be read, or as [`from_addresses`](Self::from_addresses).
    pub async fn discover(
        registry: &dyn Registry,
        config: ClusterConfig,
    ) -> Result<ClusterClient, Error> {
        let c = ClusterClient::with(&config)?;
        let mut rx = registry
            .discover(Target::new(
                "grpc",
                config.service.clone(),
                config.mode.clone(),
            ))
            .await
            .map_err(|e| Error::Unavailable(format!("registry: {e}")))?;
        c.shared.follow(&rx.borrow_and_update())?;
        let weak: Weak<Shared> = Arc::downgrade(&c.shared);
        tokio::spawn(follow(rx, weak));
        Ok(c)
    }

    /// The nodes in use, by address.
    pub fn nodes(&self) -> Vec<String> {
        self.shared
            .current()
            .iter()
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Waits until the node addresses in use satisfy `done` (a node registered or gone), or
    /// `timeout`; whether they did.
    pub async fn wait_for_nodes(
        &self,
        timeout: std::time::Duration,
        mut done: impl FnMut(&[String]) -> bool,
    ) -> bool {
        let mut rx = self.shared.nodes.subscribe();
        let wait = rx.wait_for(|nodes| {
            let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
            done(&addrs)
        });
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// The addresses of `key`'s owners, best first.
    pub fn owners_of(&self, key: &[u8]) -> Vec<String> {
        let nodes = self.shared.current();
        let seeds: Vec<u64> = nodes.iter().map(|n| n.seed).collect();
        owners(&seeds, key, self.shared.replicas)
            .into_iter()
            .map(|i| nodes[i].addr.clone())
            .collect()
    }

    fn owner_clients(&self, key: &[u8]) -> Result<Vec<Node>, Error> {
        let nodes = self.shared.current();
        if nodes.is_empty() {
            return Err(Error::Unavailable("no objstore node is registered".into()));
        }
        let seeds: Vec<u64> = nodes.iter().map(|n| n.seed).collect();
        Ok(owners(&seeds, key, self.shared.replicas)
            .into_iter()
            .map(|i| nodes[i].clone())
            .collect())
    }

    /// Writes `value` under `key` on its owners; the first acknowledgement's metadata once W
    /// have acknowledged.
    ///
    /// # Errors
    ///
    /// Fewer than W owners acknowledged (the first failure, naming how many did).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (as [`Client::put`]).
    pub async fn put(&self, key: &[u8], value: Bytes, options: PutOptions) -> Result<Info, Error> {
        let owners = self.owner_clients(key)?;
        let calls = owners.iter().map(|n| {
            let (value, options) = (value.clone(), options.clone());
            async move { n.client.put(key, value, options).await }
        });
        self.quorum(&owners, futures::future::join_all(calls).await)
    }

    /// Deletes `key` on its owners; the first acknowledgement's revision (`None`: no owner
    /// had it) once W have acknowledged.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn delete(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        let owners = self.owner_clients(key)?;
        let calls = owners
            .iter()
            .map(|n| async move { n.client.delete_with(key, DeleteOptions::default()).await });
        let results = futures::future::join_all(calls).await;
        let any = results
            .iter()
            .find_map(|r| r.as_ref().ok().copied().flatten());
        self.quorum(&owners, results).map(|_| any)
    }

    fn quorum<T>(&self, owners: &[Node], results: Vec<Result<T, Error>>) -> Result<T, Error> {
        let mut first_ok = None;
        let mut acks = 0;
        let mut failures = Vec::new();
        for (n, r) in owners.iter().zip(results) {
            match r {
                Ok(v) => {
                    acks += 1;
                    first_ok.get_or_insert(v);
                }
                Err(e) => failures.push((n.addr.clone(), e)),
            }
        }
        match first_ok {
            Some(v) if acks >= self.shared.write_quorum => Ok(v),
            _ => {
                let (addr, e) = failures
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Unavailable("no owner acknowledged the write".into()))?;
                Err(match e {
                    // A refusal or a failed condition is the answer itself.
                    e @ (Error::Precondition { .. } | Error::Refused(_) | Error::Invalid(_))
                        if acks == 0 =>
                    {
                        e
                    }
                    e => Error::Unavailable(format!(
                        "{acks} of the {} acknowledgements needed (node {addr}: {e})",
                        self.shared.write_quorum
                    )),
                })
            }
        }
    }

    /// `key`'s object from the first of its owners that has it; `None` when every owner that
    /// is up says it has not.
    ///
    /// # Errors
    ///
    /// No owner answered (the last one's error).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, Error> {
        let mut missing = false;
        let mut last = None;
        for n in self.owner_clients(key)? {
            match n.client.get(key).await {
                Ok(Some(o)) => return Ok(Some(o)),
                // Not authoritative alone: a node that joined holds none of the older keys.
                Ok(None) => missing = true,
                Err(e @ (Error::Unavailable(_) | Error::Timeout(_))) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if missing {
            return Ok(None);
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no owner".into())))
    }

    /// `key`'s metadata, as [`get`](Self::get) finds it.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn head(&self, key: &[u8]) -> Result<Option<Info>, Error> {
        let mut missing = false;
        let mut last = None;
        for n in self.owner_clients(key)? {
            match n.client.head(key).await {
                Ok(Some(i)) => return Ok(Some(i)),
                Ok(None) => missing = true,
                Err(e @ (Error::Unavailable(_) | Error::Timeout(_))) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if missing {
            return Ok(None);
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no owner".into())))
    }

    /// Every key under `prefix` on every node that is up, in order, each once (the metadata
    /// of its first owner that listed it).
    ///
    /// # Errors
    ///
    /// A node that is up failed to list; or every node is down.
    pub async fn list_all(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Info)>, Error> {
        let nodes = self.shared.current();
        let lists =
            futures::future::join_all(nodes.iter().map(|n| n.client.list_all(prefix))).await;
        let seeds: Vec<u64> = nodes.iter().map(|n| n.seed).collect();
        let mut merged: BTreeMap<Bytes, (usize, Info)> = BTreeMap::new();
        let mut up = 0;
        for (i, list) in lists.into_iter().enumerate() {
            let list = match list {
                Ok(l) => l,
                Err(Error::Unavailable(_) | Error::Timeout(_)) => continue,
                Err(e) => return Err(e),
            };
            up += 1;
            for (k, info) in list {
                // Rank of this node among the key's owners: the best-placed copy wins.
                let rank = owners(&seeds, &k, seeds.len())
                    .iter()
                    .position(|&j| j == i)
                    .unwrap_or(usize::MAX);
                match merged.get(&k) {
                    Some((r, _)) if *r <= rank => {}
                    _ => {
                        merged.insert(k, (rank, info));
                    }
                }
            }
        }
        if up == 0 && !nodes.is_empty() {
            return Err(Error::Unavailable("no objstore node answered".into()));
        }
        Ok(merged.into_iter().map(|(k, (_, i))| (k, i)).collect())
    }
}

impl Shared {
    fn current(&self) -> Arc<Vec<Node>> {
        self.nodes.borrow().clone()
    }

    /// Uses exactly `addrs` from now on (clients of nodes already known are kept).
    fn set(&self, mut addrs: Vec<String>) -> Result<(), Error> {
        addrs.sort();
        addrs.dedup();
        let old = self.current();
        let mut nodes = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let client = match old.iter().find(|n| n.addr == addr) {
                Some(n) => n.client.clone(),
                None => Client::connect_lazy(&addr, self.client.clone())?,
            };
            nodes.push(Node {
                seed: seed(&addr),
                addr,
                client,
            });
        }
        self.nodes.send_replace(Arc::new(nodes));
        Ok(())
    }

    fn follow(&self, instances: &Instances) -> Result<(), Error> {
        self.set(
            instances
                .iter()
                .filter(|i| i.enable)
                .map(|i| i.address.clone())
                .collect(),
        )
    }
}

async fn follow(mut rx: watch::Receiver<Instances>, shared: Weak<Shared>) {
    while rx.changed().await.is_ok() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let set = rx.borrow_and_update().clone();
        if let Err(e) = shared.follow(&set) {
            tracing::warn!(error = %e, "objstore cluster: cannot use the new node set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("user/{i}/avatar").into_bytes())
            .collect()
    }

    fn seeds(n: usize) -> Vec<u64> {
        (0..n).map(|i| seed(&format!("10.0.0.{i}:7070"))).collect()
    }

    #[test]
    fn keys_spread_evenly() {
        let s = seeds(5);
        let mut counts = [0usize; 5];
        let keys = keys(100_000);
        for k in &keys {
            counts[owners(&s, k, 1)[0]] += 1;
        }
        let mean = keys.len() / 5;
        for c in counts {
            let off = c.abs_diff(mean) as f64 / mean as f64;
            assert!(off < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn a_node_joining_takes_about_a_fifth_and_nothing_else_moves() {
        let four = seeds(4);
        let five = seeds(5);
        let keys = keys(100_000);
        let mut moved = 0;
        for k in &keys {
            let before = owners(&four, k, 1)[0];
            let after = owners(&five, k, 1)[0];
            if before != after {
                // Only to the newcomer.
                assert_eq!(after, 4);
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.18..0.22).contains(&share), "{share}");
    }

    #[test]
    fn a_node_leaving_moves_only_its_keys() {
        let five = seeds(5);
        let four: Vec<u64> = five[..4].to_vec();
        let keys = keys(50_000);
        let mut moved = 0;
        for k in &keys {
            let before = owners(&five, k, 1)[0];
            let after = owners(&four, k, 1)[0];
            if before != 4 {
                assert_eq!(before, after, "a key of a staying node moved");
            } else {
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.18..0.22).contains(&share), "{share}");
    }

    #[test]
    fn replicas_are_distinct_and_the_first_is_the_single_owner() {
        let s = seeds(3);
        for k in keys(1000) {
            let two = owners(&s, &k, 2);
            assert_eq!(two.len(), 2);
            assert_ne!(two[0], two[1]);
            assert_eq!(two[0], owners(&s, &k, 1)[0]);
        }
        // More replicas than nodes: every node, once.
        assert_eq!(owners(&s, b"k", 5).len(), 3);
    }

    #[test]
    fn the_hash_is_stable() {
        // Placement must not change between versions: these values are the contract.
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(seed("10.0.0.0:7070"), 0x3a8c_5aa7_f747_0fe4);
        assert_eq!(owners(&seeds(3), b"user/1/avatar", 3), [2, 0, 1]);
    }

    #[test]
    fn bad_replication_settings_are_refused() {
        for (r, w) in [(0, None), (2, Some(0)), (2, Some(3))] {
            let config = ClusterConfig {
                replicas: r,
                write_quorum: w,
                ..ClusterConfig::default()
            };
            assert!(matches!(
                ClusterClient::from_addresses(&[], config),
                Err(Error::Invalid(_))
            ));
        }
    }
}
