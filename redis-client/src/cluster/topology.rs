//! The slot map: read from `CLUSTER SHARDS` (Redis 7), or `CLUSTER SLOTS` (Redis 6), into
//! shards of one primary and its replicas, and the table from slot to shard the router reads
//! on every command.
//!
//! Parsing is pure and bounded by the reply (which the decoder already bounded): a reply that
//! does not describe a cluster is an error naming what was wrong, never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use bytes::Bytes;

use super::slot::SLOTS;
use crate::pool::Pool;
use crate::resp::Frame;

/// A node's address as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl NodeAddr {
    /// `host:port`, brackets around an IPv6 host.
    pub(crate) fn key(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses the `host:port` of a `MOVED`/`ASK` redirection.
    pub(crate) fn parse(s: &str) -> Option<NodeAddr> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        Some(NodeAddr {
            host: host.to_owned(),
            port,
        })
    }
}

/// One shard as described by the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardDesc {
    pub(crate) ranges: Vec<(u16, u16)>,
    pub(crate) primary: NodeAddr,
    /// Replicas not reported failed.
    pub(crate) replicas: Vec<NodeAddr>,
}

/// The cluster as a routing table. Shard indices are stable for the table's life; a `MOVED`
/// to a known primary patches one slot in place (an atomic store), and anything else waits
/// for the next refresh to build a new table.
pub(crate) struct Topology {
    slots: Box<[AtomicU16]>,
    pub(crate) shards: Vec<Shard>,
    pub(crate) desc: Vec<ShardDesc>,
}

pub(crate) struct Shard {
    pub(crate) primary: Arc<Pool>,
    pub(crate) replicas: Vec<Arc<Pool>>,
    next: AtomicUsize,
}

/// No shard serves the slot.
const NONE: u16 = u16::MAX;

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.shards.iter().map(|s| &s.primary.addr))
            .finish()
    }
}

impl Topology {
    /// A table that routes nothing (before the first slot map).
    pub(crate) fn empty() -> Topology {
        Topology {
            slots: (0..SLOTS).map(|_| AtomicU16::new(NONE)).collect(),
            shards: Vec::new(),
            desc: Vec::new(),
        }
    }

    /// The table for `desc`, with pools from `pool` (one per address).
    pub(crate) fn build(
        desc: Vec<ShardDesc>,
        with_replicas: bool,
        mut pool: impl FnMut(&NodeAddr, bool) -> Arc<Pool>,
    ) -> Topology {
        let slots: Box<[AtomicU16]> = (0..SLOTS).map(|_| AtomicU16::new(NONE)).collect();
        let mut shards = Vec::with_capacity(desc.len());
        for (i, d) in desc.iter().enumerate() {
            for &(lo, hi) in &d.ranges {
                for s in lo..=hi {
                    slots[usize::from(s)].store(i as u16, Ordering::Relaxed);
                }
            }
            shards.push(Shard {
                primary: pool(&d.primary, false),
                replicas: if with_replicas {
                    d.replicas.iter().map(|r| pool(r, true)).collect()
                } else {
                    Vec::new()
                },
                next: AtomicUsize::new(0),
            });
        }
        Topology {
            slots,
            shards,
            desc,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard serving `slot`.
    pub(crate) fn shard(&self, slot: u16) -> Option<&Shard> {
        let i = self.slots.get(usize::from(slot))?.load(Ordering::Relaxed);
        self.shards.get(usize::from(i))
    }

    /// Points `slot` at the shard whose primary is `addr`, if there is one. Whether it could.
    pub(crate) fn patch(&self, slot: u16, addr: &str) -> bool {
        let Some(cell) = self.slots.get(usize::from(slot)) else {
            return false;
        };
        match self.shards.iter().position(|s| &*s.primary.addr == addr) {
            Some(i) => {
                cell.store(i as u16, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The same cluster layout (slots, primaries, replicas), ignoring pools.
    pub(crate) fn same_as(&self, desc: &[ShardDesc]) -> bool {
        self.desc == desc
    }
}

impl Shard {
    /// A pool for a read: the primary, a replica, or either by turns. Replicas whose
    /// connections are all down are passed over.
    pub(crate) fn for_read(&self, policy: crate::ReadFrom) -> &Arc<Pool> {
        use crate::ReadFrom;
        if policy == ReadFrom::Primary || self.replicas.is_empty() {
            return &self.primary;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (choices, offset) = match policy {
            ReadFrom::RoundRobin => (self.replicas.len() + 1, 0),
            _ => (self.replicas.len(), 1),
        };
        // Start at the turn's choice, then the next ones: the first that is up.
        for k in 0..choices {
            let pick = (n + k) % choices + offset;
            let pool = if pick == 0 {
                &self.primary
            } else {
                &self.replicas[pick - 1]
            };
            if pick == 0 || pool.is_any_connected() {
                return pool;
            }
        }
        &self.primary
    }
}

/// The fields of a map-like frame: a RESP3 map, or a RESP2 flat array of name/value pairs.
fn fields(frame: &Frame) -> Option<Vec<(&[u8], &Frame)>> {
    match frame {
        Frame::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(k, v)| Some((k.as_bytes()?.as_ref(), v)))
                .collect(),
        ),
        Frame::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k.as_bytes()?.as_ref(), v)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn field<'a>(fields: &[(&[u8], &'a Frame)], name: &str) -> Option<&'a Frame> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

fn text(frame: &Frame) -> Option<String> {
    frame
        .as_bytes()
        .map(|b: &Bytes| String::from_utf8_lossy(b).into_owned())
}

fn int(frame: &Frame) -> Option<i64> {
    match frame {
        Frame::Integer(i) => Some(*i),
        f => text(f)?.parse().ok(),
    }
}

fn slot(frame: &Frame) -> Result<u16, String> {
    int(frame)
        .and_then(|i| u16::try_from(i).ok())
        .filter(|s| usize::from(*s) < SLOTS)
        .ok_or_else(|| format!("slot {frame:?} out of range"))
}

/// A node's host: the announced endpoint unless it is unknown (`?`) or empty ("the node you
/// asked"), then its IP, then the node that answered.
fn host(endpoint: Option<String>, ip: Option<String>, asked: &NodeAddr) -> String {
    match endpoint {
        Some(e) if !e.is_empty() && e != "?" => e,
        _ => match ip {
            Some(ip) if !ip.is_empty() && ip != "?" => ip,
            _ => asked.host.clone(),
        },
    }
}

/// `CLUSTER SHARDS`: per shard, `slots` (start/end pairs) and `nodes` (maps with `endpoint`,
/// `ip`, `port`, `tls-port`, `role`, `health`).
pub(crate) fn parse_shards(
    reply: &Frame,
    asked: &NodeAddr,
    tls: bool,
) -> Result<Vec<ShardDesc>, String> {
    let Frame::Array(shards) = reply else {
        return Err(format!("CLUSTER SHARDS replied {}", reply.kind()));
    };
    let mut out = Vec::new();
    for shard in shards {
        let f = fields(shard).ok_or("a shard is not a map")?;
        let ranges = match field(&f, "slots") {
            Some(Frame::Array(bounds)) => bounds
                .chunks(2)
                .map(|b| match b {
                    [lo, hi] => Ok((slot(lo)?, slot(hi)?)),
                    _ => Err("odd number of slot bounds".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("a shard without slots".into()),
        };
        let Some(Frame::Array(nodes)) = field(&f, "nodes") else {
            return Err("a shard without nodes".into());
        };
        let mut primary: Option<(NodeAddr, bool)> = None;
        let mut replicas = Vec::new();
        for node in nodes {
            let n = fields(node).ok_or("a node is not a map")?;
            let port_field = if tls { "tls-port" } else { "port" };
            let port = field(&n, port_field)
                .or_else(|| field(&n, "port"))
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or("a node without a port")?;
            let addr = NodeAddr {
                host: host(
                    field(&n, "endpoint").and_then(text),
                    field(&n, "ip").and_then(text),
                    asked,
                ),
                port,
            };
            // Redis 7.0 reports a replica that has not replicated a byte yet (an idle new
            // cluster) as "loading": only "failed" nodes are left out. A replica that really
            // is loading answers LOADING, which the router retries elsewhere.
            let online = field(&n, "health").and_then(text).as_deref() != Some("failed");
            match field(&n, "role").and_then(text).as_deref() {
                // A failed primary stays the primary until a replica takes over.
                Some("master") => match &primary {
                    Some((_, true)) => {}
                    _ => primary = Some((addr, online)),
                },
                _ if online => replicas.push(addr),
                _ => {}
            }
        }
        // Shards without slots (an empty primary) route nothing.
        if ranges.is_empty() {
            continue;
        }
        let Some((primary, _)) = primary else {
            return Err("a shard with slots and no primary".into());
        };
        replicas.sort();
        out.push(ShardDesc {
            ranges,
            primary,
            replicas,
        });
    }
    normalize(out)
}

/// `CLUSTER SLOTS` (Redis 6): `[start, end, [host, port, id, …], [replica…]…]` per range;
/// several ranges of one primary merge into one shard.
pub(crate) fn parse_slots(reply: &Frame, asked: &NodeAddr) -> Result<Vec<ShardDesc>, String> {
    let Frame::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS replied {}", reply.kind()));
    };
    let mut out: Vec<ShardDesc> = Vec::new();
    for range in ranges {
        let Frame::Array(items) = range else {
            return Err("a slot range is not an array".into());
        };
        let [lo, hi, nodes @ ..] = items.as_slice() else {
            return Err("a slot range without bounds".into());
        };
        let (lo, hi) = (slot(lo)?, slot(hi)?);
        let mut addrs = Vec::new();
        for node in nodes {
            let Frame::Array(n) = node else {
                return Err("a node is not an array".into());
            };
            let endpoint = n.first().and_then(text);
            let port = n
                .get(1)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or("a node without a port")?;
            addrs.push(NodeAddr {
                host: host(endpoint, None, asked),
                port,
            });
        }
        let mut addrs = addrs.into_iter();
        let primary = addrs.next().ok_or("a slot range without a primary")?;
        let mut replicas: Vec<NodeAddr> = addrs.collect();
        replicas.sort();
        match out.iter_mut().find(|s| s.primary == primary) {
            Some(s) => s.ranges.push((lo, hi)),
            None => out.push(ShardDesc {
                ranges: vec![(lo, hi)],
                primary,
                replicas,
            }),
        }
    }
    normalize(out)
}

/// Sorted (so equal layouts compare equal), checked for sane ranges.
fn normalize(mut shards: Vec<ShardDesc>) -> Result<Vec<ShardDesc>, String> {
    for s in &mut shards {
        if s.ranges.iter().any(|(lo, hi)| lo > hi) {
            return Err(format!(
                "slot range ending before it starts: {:?}",
                s.ranges
            ));
        }
        s.ranges.sort_unstable();
    }
    shards.sort_by(|a, b| a.ranges.first().cmp(&b.ranges.first()));
    if shards.is_empty() {
        return Err("no node serves any slot".into());
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(endpoint: &str, port: i64, role: &str, health: &str) -> Frame {
        Frame::Array(vec![
            b("id"),
            b("abc"),
            b("port"),
            Frame::Integer(port),
            b("ip"),
            b("127.0.0.1"),
            b("endpoint"),
            b(endpoint),
            b("role"),
            b(role),
            b("health"),
            b(health),
        ])
    }

    fn shard(bounds: &[i64], nodes: Vec<Frame>) -> Frame {
        Frame::Array(vec![
            b("slots"),
            Frame::Array(bounds.iter().map(|&i| Frame::Integer(i)).collect()),
            b("nodes"),
            Frame::Array(nodes),
        ])
    }

    fn addr(host: &str, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn shards_reply() {
        let asked = addr("10.0.0.9", 7000);
        let reply = Frame::Array(vec![
            shard(
                &[5461, 10922],
                vec![
                    node("127.0.0.1", 7001, "master", "online"),
                    node("", 7004, "replica", "online"),
                ],
            ),
            shard(
                &[0, 100, 200, 5460],
                vec![
                    node("?", 7000, "master", "online"),
                    node("127.0.0.1", 7003, "replica", "failed"),
                ],
            ),
        ]);
        let shards = parse_shards(&reply, &asked, false).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].ranges, vec![(0, 100), (200, 5460)]);
        // `?` falls back to the IP; the failed replica is left out.
        assert_eq!(shards[0].primary, addr("127.0.0.1", 7000));
        assert!(shards[0].replicas.is_empty());
        // An empty endpoint falls back to the IP too.
        assert_eq!(shards[1].replicas, vec![addr("127.0.0.1", 7004)]);
        // With neither, the node that answered.
        assert_eq!(host(Some(String::new()), None, &asked), "10.0.0.9");
    }

    #[test]
    fn slots_reply_merges_ranges_of_one_primary() {
        let asked = addr("h", 1);
        let n = |p| Frame::Array(vec![b("127.0.0.1"), Frame::Integer(p), b("id")]);
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(10),
                n(7000),
                n(7003),
            ]),
            Frame::Array(vec![Frame::Integer(11), Frame::Integer(16383), n(7001)]),
            Frame::Array(vec![Frame::Integer(20), Frame::Integer(30), n(7000)]),
        ]);
        let shards = parse_slots(&reply, &asked).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].ranges, vec![(0, 10), (20, 30)]);
        assert_eq!(shards[0].replicas, vec![addr("127.0.0.1", 7003)]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        let asked = addr("h", 1);
        for bad in [
            Frame::Integer(3),
            Frame::Array(vec![]),
            Frame::Array(vec![Frame::Integer(1)]),
            Frame::Array(vec![shard(
                &[0, 99999],
                vec![node("a", 1, "master", "online")],
            )]),
            Frame::Array(vec![shard(&[0], vec![node("a", 1, "master", "online")])]),
            Frame::Array(vec![shard(
                &[0, 10],
                vec![node("a", 0, "master", "online")],
            )]),
            Frame::Array(vec![shard(
                &[0, 10],
                vec![node("a", 1, "replica", "online")],
            )]),
            Frame::Array(vec![shard(
                &[10, 0],
                vec![node("a", 1, "master", "online")],
            )]),
        ] {
            assert!(parse_shards(&bad, &asked, false).is_err(), "{bad:?}");
        }
        assert!(parse_slots(&Frame::Array(vec![Frame::Null]), &asked).is_err());
        assert!(
            parse_slots(
                &Frame::Array(vec![Frame::Array(vec![
                    Frame::Integer(0),
                    Frame::Integer(5)
                ])]),
                &asked
            )
            .is_err()
        );
    }

    #[test]
    fn redirection_addresses() {
        assert_eq!(
            NodeAddr::parse("127.0.0.1:7000"),
            Some(addr("127.0.0.1", 7000))
        );
        assert_eq!(NodeAddr::parse("[::1]:7000"), Some(addr("::1", 7000)));
        assert_eq!(addr("::1", 7000).key(), "[::1]:7000");
        assert_eq!(NodeAddr::parse("nohost"), None);
        assert_eq!(NodeAddr::parse("h:0"), None);
        assert_eq!(NodeAddr::parse("h:99999"), None);
    }
}
