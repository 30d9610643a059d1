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
//! acknowledged. Reads ask every owner at once and return the newest copy; a node that is
//! down, or answers unavailable, is passed over, and "not found" is the answer when no owner
//! that is up has a copy. With R = 2 and one node lost, every key stays readable.
//!
//! # Repair: stamps, tombstones, read repair
//!
//! Each node numbers its own revisions, so revisions of two nodes say nothing about which
//! write came last. Every cluster write therefore carries a *stamp* in its metadata
//! (`objstore-stamp`): Unix milliseconds in the top 48 bits and a counter below, never
//! repeated nor going back within one process. The copy with the highest stamp is the
//! newest (last writer wins, as in Cassandra and Dynamo); an object written around the
//! cluster client has no stamp and loses to any cluster write.
//!
//! A delete writes a *tombstone* (an empty value marked `objstore-deleted`, with its stamp,
//! expiring after `tombstone_ttl`) rather than removing the key, so that a node that missed
//! the delete cannot bring the old value back: the tombstone is newer. Reads, `head` and
//! listings treat a tombstone as absent; an `if_absent` write succeeds over one. A node that
//! stays away longer than `tombstone_ttl` can bring a deleted key back (Cassandra's
//! `gc_grace_seconds` has the same limit): keep it above the longest outage you repair.
//!
//! When a read finds owners that answered without the newest copy (a node that missed
//! writes while down or paused, a node that joined and owns keys it never received), it
//! writes the newest copy to them before returning, each write conditioned on what that
//! owner held (absent, or its revision), so a repair never overwrites a write that came in
//! meanwhile. [`ClusterClient::repairs`] counts them. The two reserved metadata keys are
//! removed from what callers get back. Keys nobody reads are not repaired; a key whose owners
//! all changed with the node set is found only by listing (`list_all` asks every node) until
//! it is written again.
//!
//! # Following the registry
//!
//! [`ClusterClient::discover`] watches the service's instances; a node that registers is used
//! from the next call on, one whose lease ends is dropped. The watch task holds the client's
//! state weakly: dropping the last [`ClusterClient`] ends it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jupiter_core::registry::{Instances, Registry, Target};
use tokio::sync::watch;

use crate::client::{Client, ClientConfig, Info, Object, PutOptions};
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
    /// How long a delete's tombstone is kept (see the module docs). Default 24 hours.
    pub tombstone_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            service: "objstore".into(),
            mode: jupiter_core::registry::DEFAULT_MODE.into(),
            replicas: 1,
            write_quorum: None,
            client: ClientConfig::default(),
            tombstone_ttl: Duration::from_secs(24 * 3600),
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
    tombstone_ttl: Duration,
    /// Copies written by read repair.
    repairs: AtomicU64,
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

/// Metadata key of a cluster write's stamp (see the module docs).
pub const STAMP_KEY: &str = "objstore-stamp";
/// Metadata key that marks a delete's tombstone.
pub const TOMBSTONE_KEY: &str = "objstore-deleted";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A new write's stamp: Unix milliseconds above 16 bits of counter, higher than every stamp
/// this process made before (a clock stepping back does not make it go back).
fn next_stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wall = unix_ms().saturating_mul(1 << 16);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = wall.max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// A copy's stamp; 0 for an object written around the cluster client (or a stamp that is
/// not a number).
fn stamp_of(info: &Info) -> u64 {
    info.metadata
        .get(STAMP_KEY)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn is_tombstone(info: &Info) -> bool {
    info.metadata.contains_key(TOMBSTONE_KEY)
}

/// What callers see: the metadata without the reserved keys.
fn public(mut info: Info) -> Info {
    info.metadata.remove(STAMP_KEY);
    info.metadata.remove(TOMBSTONE_KEY);
    info
}

/// The newest of `copies` (highest stamp; on a tie the best placed, which comes first).
fn newest<'a, T>(copies: impl Iterator<Item = &'a T>, info: impl Fn(&T) -> &Info) -> Option<&'a T>
where
    T: 'a,
{
    copies.fold(None, |best: Option<&T>, c| match best {
        Some(b) if stamp_of(info(b)) >= stamp_of(info(c)) => Some(b),
        _ => Some(c),
    })
}

/// Sorts the owners' answers: each answering owner's copy by index, or the error to return.
fn answers<T>(results: Vec<Result<Option<T>, Error>>) -> Result<Vec<(usize, Option<T>)>, Error> {
    let mut copies = Vec::with_capacity(results.len());
    let mut last = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(c) => copies.push((i, c)),
            Err(e @ (Error::Unavailable(_) | Error::Timeout(_))) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    if copies.is_empty() {
        return Err(last.unwrap_or_else(|| Error::Unavailable("no owner".into())));
    }
    Ok(copies)
}

/// One owner's write. `if_absent` also holds over a tombstone: the key was deleted.
async fn put_on(n: &Node, key: &[u8], value: Bytes, options: PutOptions) -> Result<Info, Error> {
    match n.client.put(key, value.clone(), options.clone()).await {
        Err(e @ Error::Precondition { .. }) if options.if_absent => match n.client.head(key).await?
        {
            Some(i) if is_tombstone(&i) => {
                let over = PutOptions {
                    if_absent: false,
                    if_revision: Some(i.mod_revision),
                    ..options
                };
                n.client.put(key, value, over).await
            }
            _ => Err(e),
        },
        r => r,
    }
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
                tombstone_ttl: config.tombstone_ttl,
                repairs: AtomicU64::new(0),
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
    pub async fn put(
        &self,
        key: &[u8],
        value: Bytes,
        mut options: PutOptions,
    ) -> Result<Info, Error> {
        let owners = self.owner_clients(key)?;
        options.metadata.remove(TOMBSTONE_KEY);
        options
            .metadata
            .insert(STAMP_KEY.to_owned(), next_stamp().to_string());
        let calls = owners
            .iter()
            .map(|n| put_on(n, key, value.clone(), options.clone()));
        self.quorum(&owners, futures::future::join_all(calls).await)
            .map(public)
    }

    /// Deletes `key` on its owners by writing its tombstone there (see the module docs); the
    /// tombstone's revision on the first owner that acknowledged (`None`: no owner had the
    /// key) once W have acknowledged.
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
        let before = futures::future::join_all(owners.iter().map(|n| n.client.head(key))).await;
        let existed = before
            .iter()
            .any(|r| matches!(r, Ok(Some(i)) if !is_tombstone(i)));
        let options = PutOptions {
            ttl: Some(self.shared.tombstone_ttl),
            metadata: [
                (STAMP_KEY.to_owned(), next_stamp().to_string()),
                (TOMBSTONE_KEY.to_owned(), "1".to_owned()),
            ]
            .into(),
            ..PutOptions::default()
        };
        let calls = owners
            .iter()
            .map(|n| n.client.put(key, Bytes::new(), options.clone()));
        let info = self.quorum(&owners, futures::future::join_all(calls).await)?;
        Ok(existed.then_some(info.mod_revision))
    }

    /// Copies written by read repair since the client was made.
    pub fn repairs(&self) -> u64 {
        self.shared.repairs.load(Ordering::Relaxed)
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

    /// `key`'s newest object among its owners (asked at once); `None` when no owner that is
    /// up has it, or the newest copy is a tombstone. Owners that answered without the newest
    /// copy get it written back first (read repair, see the module docs).
    ///
    /// # Errors
    ///
    /// No owner answered (the last one's error), or an owner refused the read.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, Error> {
        let owners = self.owner_clients(key)?;
        let results = futures::future::join_all(owners.iter().map(|n| n.client.get(key))).await;
        let copies = answers(results)?;
        let Some(winner) =
            newest(copies.iter().filter_map(|(_, c)| c.as_ref()), |o| &o.info).cloned()
        else {
            return Ok(None);
        };
        let best = stamp_of(&winner.info);
        let stale: Vec<(usize, Option<u64>)> = copies
            .iter()
            // Two writers may stamp alike (same millisecond and counter): the best placed
            // copy then wins, and differing ones are repaired to it.
            .filter(|(_, c)| {
                c.as_ref().is_none_or(|o| {
                    let s = stamp_of(&o.info);
                    s < best || (s == best && o.value != winner.value)
                })
            })
            .map(|(i, c)| (*i, c.as_ref().map(|o| o.info.mod_revision)))
            .collect();
        if !stale.is_empty() {
            self.repair(&owners, key, &winner, &stale).await;
        }
        if is_tombstone(&winner.info) {
            return Ok(None);
        }
        Ok(Some(Object {
            value: winner.value,
            info: public(winner.info),
        }))
    }

    /// Writes `winner` to the owners in `stale` (index, revision held if any), each only if it
    /// still holds what it answered.
    async fn repair(
        &self,
        owners: &[Node],
        key: &[u8],
        winner: &Object,
        stale: &[(usize, Option<u64>)],
    ) {
        let ttl = match winner.info.expires_at_ms {
            None => None,
            Some(at) => match at.checked_sub(unix_ms()) {
                Some(left) if left > 0 => Some(Duration::from_millis(left)),
                // Expired meanwhile: nothing to copy.
                _ => return,
            },
        };
        let calls = stale.iter().map(|&(i, held)| {
            let options = PutOptions {
                ttl,
                content_type: (!winner.info.content_type.is_empty())
                    .then(|| winner.info.content_type.clone()),
                metadata: winner.info.metadata.clone(),
                if_absent: held.is_none(),
                if_revision: held,
                if_etag: None,
            };
            let n = &owners[i];
            async move { (n, n.client.put(key, winner.value.clone(), options).await) }
        });
        for (n, r) in futures::future::join_all(calls).await {
            match r {
                Ok(_) => {
                    self.shared.repairs.fetch_add(1, Ordering::Relaxed);
                }
                // A write came in meanwhile, or the node went away: left as it is.
                Err(e) => {
                    tracing::debug!(node = %n.addr, error = %e, "objstore cluster: repair not written")
                }
            }
        }
    }

    /// `key`'s metadata, as [`get`](Self::get) finds it: when the owners' copies differ, the
    /// read is a `get` (which repairs them).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn head(&self, key: &[u8]) -> Result<Option<Info>, Error> {
        let owners = self.owner_clients(key)?;
        let results = futures::future::join_all(owners.iter().map(|n| n.client.head(key))).await;
        let copies = answers(results)?;
        let stamps = |c: &Option<Info>| c.as_ref().map(stamp_of);
        if copies
            .iter()
            .any(|(_, c)| stamps(c) != stamps(&copies[0].1))
        {
            return Ok(self.get(key).await?.map(|o| o.info));
        }
        Ok(copies
            .into_iter()
            .next()
            .and_then(|(_, c)| c)
            .filter(|i| !is_tombstone(i))
            .map(public))
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
                // The newest copy wins; among equals, the best placed.
                let rank = owners(&seeds, &k, seeds.len())
                    .iter()
                    .position(|&j| j == i)
                    .unwrap_or(usize::MAX);
                let better = |(r, held): &(usize, Info)| {
                    (stamp_of(&info), std::cmp::Reverse(rank))
                        > (stamp_of(held), std::cmp::Reverse(*r))
                };
                if merged.get(&k).is_none_or(better) {
                    merged.insert(k, (rank, info));
                }
            }
        }
        if up == 0 && !nodes.is_empty() {
            return Err(Error::Unavailable("no objstore node answered".into()));
        }
        Ok(merged
            .into_iter()
            .filter(|(_, (_, i))| !is_tombstone(i))
            .map(|(k, (_, i))| (k, public(i)))
            .collect())
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
