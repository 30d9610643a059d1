//! Pub/sub on connections of their own, resubscribed after every reconnect.
//!
//! A session is one subscription connection to one server: it keeps the set of channels,
//! patterns and shard channels it was asked for, subscribes again to all of them after a
//! reconnect, and reports what the server took away on its own. A standalone subscriber is one
//! session. A cluster subscriber is a manager over sessions: channels and patterns on one
//! session (the cluster forwards every `PUBLISH` to every node), shard channels on a session
//! per primary that serves their slot, moved when the server says the slot left (a
//! server-sent `sunsubscribe` after resharding or failover) or the node went down.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use jupiter_core::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::Error;
use crate::client::{Client, Mode};
use crate::cmd::ToArg;
use crate::config::Settings;
use crate::resp::{Decoder, Frame, encode_command};

/// Messages buffered for a slow reader before the connection stops reading (and Redis's
/// `client-output-buffer-limit` eventually disconnects it; it then reconnects and resubscribes).
const MESSAGE_BUFFER: usize = 4096;

/// What a [`Subscriber`] hands out: messages, and the gaps between them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriberEvent {
    /// A published message.
    Message(Message),
    /// A connection was lost (and is being made again): messages published until it has
    /// resubscribed are not seen. A reader that keeps state from messages (an invalidation
    /// listener) must assume it missed some.
    Gap,
}

/// One published message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Bytes,
    /// The pattern that matched, for pattern subscriptions.
    pub pattern: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
    /// Sharded channels (`SSUBSCRIBE`, Redis 7).
    Shard,
}

type Ack = oneshot::Sender<Result<(), Error>>;

struct Change {
    kind: Kind,
    subscribe: bool,
    names: Vec<Bytes>,
    ack: Ack,
}

/// What a session tells its cluster manager.
enum Notice {
    /// The server unsubscribed the session from this shard channel (its slot moved).
    Evicted { channel: Bytes },
    /// The session's server could not be reached.
    Down,
}

/// A subscription connection (a set of them in cluster mode): subscribe to channels, patterns
/// and shard channels, receive messages. After a lost connection it reconnects and subscribes
/// again to everything it had, so a subscriber only misses what was published while it was
/// disconnected. In cluster mode shard channels follow their slot to its new primary.
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// let mut sub = client.subscriber();
/// sub.subscribe(&["news"]).await?;
/// sub.psubscribe(&["alerts.*"]).await?;
/// client.publish("news", "hello").await?;
/// let msg = sub.next_message().await.expect("open");
/// assert_eq!(&msg.payload[..], b"hello");
/// # Ok(()) }
/// ```
pub struct Subscriber {
    ctl: mpsc::Sender<Change>,
    messages: mpsc::Receiver<SubscriberEvent>,
    task: AbortHandle,
    /// How long a change waits for the server's confirmation: the connect timeout plus the
    /// command timeout (`None`: no command timeout).
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// A subscriber on connections of its own (connected in the background).
    pub fn subscriber(&self) -> Subscriber {
        let (ctl_tx, ctl_rx) = mpsc::channel(64);
        let (msg_tx, msg_rx) = mpsc::channel(MESSAGE_BUFFER);
        let config = Arc::clone(&self.inner.config);
        let timeout = config.timeout().map(|t| t + config.connect_timeout);
        let task = match &self.inner.mode {
            Mode::Single(_) => tokio::spawn(session(Target::Fixed(config), ctl_rx, msg_tx, None)),
            Mode::Cluster(_) => tokio::spawn(manage(self.clone(), ctl_rx, msg_tx)),
        };
        Subscriber {
            ctl: ctl_tx,
            messages: msg_rx,
            task: task.abort_handle(),
            timeout,
        }
    }
}

impl Subscriber {
    async fn change<C: ToArg>(
        &self,
        kind: Kind,
        subscribe: bool,
        names: &[C],
    ) -> Result<(), Error> {
        // An argument that encodes to nothing (`None`) names no channel.
        let names: Vec<Bytes> = names
            .iter()
            .filter(|n| n.count() > 0)
            .map(crate::commands::arg_bytes)
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.ctl
            .send(Change {
                kind,
                subscribe,
                names,
                ack,
            })
            .await
            .map_err(|_| Error::Closed)?;
        // The server confirms once connected: while it is down, the caller hears a timeout
        // (the change stays wanted and is made when the connection is back).
        match self.timeout {
            Some(t) => match tokio::time::timeout(t, done).await {
                Ok(r) => r.map_err(|_| Error::Closed)?,
                Err(_) => Err(Error::Timeout(t)),
            },
            None => done.await.map_err(|_| Error::Closed)?,
        }
    }

    /// Subscribes to channels; returns once the server confirmed.
    ///
    /// # Errors
    ///
    /// The subscriber's task ended, the server refused, or it did not confirm within the
    /// connect and command timeouts ([`Error::Timeout`]: it is down; the subscription is made
    /// once it is back).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the subscription.
    pub async fn subscribe<C: ToArg>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(Kind::Channel, true, channels).await
    }

    /// Unsubscribes from channels.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the change.
    pub async fn unsubscribe<C: ToArg>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(Kind::Channel, false, channels).await
    }

    /// Subscribes to glob patterns (`news.*`).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the subscription.
    pub async fn psubscribe<C: ToArg>(&self, patterns: &[C]) -> Result<(), Error> {
        self.change(Kind::Pattern, true, patterns).await
    }

    /// Unsubscribes from patterns.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the change.
    pub async fn punsubscribe<C: ToArg>(&self, patterns: &[C]) -> Result<(), Error> {
        self.change(Kind::Pattern, false, patterns).await
    }

    /// Subscribes to shard channels (`SSUBSCRIBE`, Redis 7): in cluster mode on the primary of
    /// each channel's slot, and moved with the slot. Publish with
    /// [`Client::spublish`](crate::Client::spublish).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the subscription.
    pub async fn ssubscribe<C: ToArg>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(Kind::Shard, true, channels).await
    }

    /// Unsubscribes from shard channels.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// Cancelling does not undo the change.
    pub async fn sunsubscribe<C: ToArg>(&self, channels: &[C]) -> Result<(), Error> {
        self.change(Kind::Shard, false, channels).await
    }

    /// The next message (gaps passed over); `None` once the subscriber's task ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no message is lost.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            match self.messages.recv().await? {
                SubscriberEvent::Message(m) => return Some(m),
                SubscriberEvent::Gap => {}
            }
        }
    }

    /// The next message or gap (a lost connection); `None` once the subscriber's task ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost.
    pub async fn next_event(&mut self) -> Option<SubscriberEvent> {
        self.messages.recv().await
    }
}

/// Where a session connects.
enum Target {
    /// Always this server.
    Fixed(Arc<Settings>),
    /// A cluster's channel session: any primary the map knows, tried in turn.
    AnyPrimary(Client),
}

impl Target {
    /// The server to try next (attempt `n`).
    fn settings(&self, n: usize) -> Arc<Settings> {
        match self {
            Target::Fixed(s) => s.clone(),
            Target::AnyPrimary(client) => {
                let primaries = client.scan_targets();
                let pools: Vec<_> = primaries.into_iter().flatten().collect();
                if pools.is_empty() {
                    return client.inner.config.clone();
                }
                pools[n % pools.len()].settings.clone()
            }
        }
    }
}

#[derive(Default)]
struct Wanted {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shards: BTreeSet<Bytes>,
}

impl Wanted {
    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shards,
        }
    }

    fn apply(&mut self, kind: Kind, subscribe: bool, names: &[Bytes]) {
        let set = self.set(kind);
        for n in names {
            if subscribe {
                set.insert(n.clone());
            } else {
                set.remove(n);
            }
        }
    }
}

/// A change waiting for its confirmations.
struct PendingAck {
    confirmations: usize,
    ack: Ack,
}

/// One subscription connection: connect, resubscribe, serve changes and messages; on a lost
/// connection, back off and do it again. Ends when its controller goes.
async fn session(
    target: Target,
    mut ctl: mpsc::Receiver<Change>,
    messages: mpsc::Sender<SubscriberEvent>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
) {
    let mut wanted = Wanted::default();
    let mut attempt = 0usize;
    let mut backoff = {
        let s = target.settings(0);
        Backoff::new(s.reconnect_min, s.reconnect_max)
    };
    // Changes asked for while disconnected, acknowledged after the resubscribe.
    let mut waiting: Vec<Ack> = Vec::new();
    loop {
        let config = target.settings(attempt);
        attempt += 1;
        let mut stream = match crate::conn::connect(&config).await {
            Ok(s) => {
                backoff.reset();
                s
            }
            Err(e) => {
                tracing::debug!(addr = %config.addr(), error = %e, "subscriber connect failed");
                if let Some(n) = &notices {
                    let _ = n.send(Notice::Down);
                }
                let sleep = tokio::time::sleep(backoff.next_delay());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        c = ctl.recv() => match c {
                            Some(change) => {
                                wanted.apply(change.kind, change.subscribe, &change.names);
                                waiting.push(change.ack);
                            }
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        let mut out = BytesMut::new();
        let mut acks: Vec<PendingAck> = Vec::new();
        // Resubscribe to everything wanted; the acks of changes made while down ride on it.
        let mut resub = 0;
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            let names: Vec<Bytes> = wanted.set(kind).iter().cloned().collect();
            if !names.is_empty() {
                write_change(&mut out, kind, true, &names);
                resub += names.len();
            }
        }
        let mut waiting_acks = std::mem::take(&mut waiting).into_iter();
        if let Some(first) = waiting_acks.next() {
            acks.push(PendingAck {
                confirmations: resub,
                ack: first,
            });
            for ack in waiting_acks {
                acks.push(PendingAck {
                    confirmations: 0,
                    ack,
                });
            }
        } else if resub > 0 {
            let (tx, _rx) = oneshot::channel();
            acks.push(PendingAck {
                confirmations: resub,
                ack: tx,
            });
        }
        // Shard unsubscribes we asked for: any other `sunsubscribe` is the server's doing.
        let mut asked_sunsub: HashMap<Bytes, usize> = HashMap::new();
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut decoder = Decoder::with_limits(
            config.max_frame.bytes() as usize,
            crate::resp::DEFAULT_MAX_DEPTH,
        );
        let result: Result<(), String> = async {
            if !out.is_empty() {
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            settle(&mut acks);
            loop {
                tokio::select! {
                    c = ctl.recv() => match c {
                        Some(Change { kind, subscribe, names, ack }) => {
                            wanted.apply(kind, subscribe, &names);
                            if kind == Kind::Shard && !subscribe {
                                for n in &names {
                                    *asked_sunsub.entry(n.clone()).or_default() += 1;
                                }
                            }
                            let mut buf = BytesMut::new();
                            write_change(&mut buf, kind, subscribe, &names);
                            acks.push(PendingAck { confirmations: names.len(), ack });
                            stream.write_all(&buf).await.map_err(|e| e.to_string())?;
                        }
                        None => return Ok(()),
                    },
                    n = stream.read_buf(&mut rbuf) => {
                        let n = n.map_err(|e| e.to_string())?;
                        if n == 0 {
                            return Err("connection closed".to_owned());
                        }
                        while let Some(frame) = decoder.decode(&mut rbuf).map_err(|e| e.to_string())? {
                            match classify(frame) {
                                Event::Message(m) => {
                                    if messages.send(SubscriberEvent::Message(m)).await.is_err() {
                                        return Ok(());
                                    }
                                }
                                Event::ShardUnsubscribed(channel) => {
                                    match asked_sunsub.get_mut(&channel) {
                                        Some(n) if *n > 0 => {
                                            *n -= 1;
                                            confirm(&mut acks);
                                        }
                                        // The server's own: the slot left this node.
                                        _ => {
                                            wanted.shards.remove(&channel);
                                            if let Some(n) = &notices {
                                                let _ = n.send(Notice::Evicted { channel });
                                            }
                                        }
                                    }
                                }
                                Event::Confirmation => confirm(&mut acks),
                                Event::Error(e) => {
                                    // A shard channel whose slot is elsewhere now: the
                                    // manager places this node's channels again.
                                    if e.starts_with(b"MOVED")
                                        && let Some(n) = &notices
                                    {
                                        let _ = n.send(Notice::Down);
                                    }
                                    if let Some(a) = acks.pop() {
                                        let _ = a.ack.send(Err(Error::Server(e)));
                                    }
                                }
                                Event::Other => {}
                            }
                        }
                    }
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(addr = %config.addr(), error = %e, "subscriber connection lost; resubscribing");
                if let Some(n) = &notices {
                    let _ = n.send(Notice::Down);
                }
                // What was published from now until the resubscribe is not seen: say so.
                if messages.send(SubscriberEvent::Gap).await.is_err() {
                    return;
                }
                waiting.extend(acks.into_iter().map(|a| a.ack));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn confirm(acks: &mut Vec<PendingAck>) {
    if let Some(first) = acks.iter_mut().find(|a| a.confirmations > 0) {
        first.confirmations -= 1;
    }
    settle(acks);
}

/// Acknowledges, in order, the changes whose confirmations all arrived.
fn settle(acks: &mut Vec<PendingAck>) {
    while acks.first().is_some_and(|a| a.confirmations == 0) {
        let a = acks.remove(0);
        let _ = a.ack.send(Ok(()));
    }
}

/// A session of the cluster manager.
struct Session {
    ctl: mpsc::Sender<Change>,
    task: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cluster subscriber: channels and patterns on one session, each shard channel on the
/// session of its slot's primary.
async fn manage(
    client: Client,
    mut ctl: mpsc::Receiver<Change>,
    messages: mpsc::Sender<SubscriberEvent>,
) {
    let (notice_tx, mut notices) = mpsc::unbounded_channel::<(String, Notice)>();
    let spawn = |target: Target, addr: String| {
        let (tx, rx) = mpsc::channel(64);
        let (ntx, mut nrx) = mpsc::unbounded_channel();
        let fwd = notice_tx.clone();
        let messages = messages.clone();
        let task = tokio::spawn(async move {
            let run = session(target, rx, messages, Some(ntx));
            tokio::pin!(run);
            loop {
                tokio::select! {
                    () = &mut run => return,
                    Some(n) = nrx.recv() => {
                        let _ = fwd.send((addr.clone(), n));
                    }
                }
            }
        });
        Session {
            ctl: tx,
            task: task.abort_handle(),
        }
    };
    let main = spawn(Target::AnyPrimary(client.clone()), String::new());
    let mut shards: HashMap<String, Session> = HashMap::new();
    // Each shard channel and the node it is subscribed on.
    let mut placed: HashMap<Bytes, String> = HashMap::new();
    loop {
        tokio::select! {
            change = ctl.recv() => {
                let Some(change) = change else { return };
                if change.kind != Kind::Shard {
                    let _ = main.ctl.send(change).await;
                    continue;
                }
                // Per node, the part of the change it serves; the caller's ack once all are.
                let mut parts: HashMap<String, Vec<Bytes>> = HashMap::new();
                let mut failed = None;
                for name in &change.names {
                    let node = if change.subscribe {
                        match shard_owner(&client, name).await {
                            Ok(node) => node,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    } else {
                        match placed.get(name) {
                            Some(node) => node.clone(),
                            None => continue,
                        }
                    };
                    parts.entry(node).or_default().push(name.clone());
                }
                if let Some(e) = failed {
                    let _ = change.ack.send(Err(e));
                    continue;
                }
                let mut acks = Vec::new();
                for (node, names) in parts {
                    for n in &names {
                        if change.subscribe {
                            placed.insert(n.clone(), node.clone());
                        } else {
                            placed.remove(n);
                        }
                    }
                    let session = shards.entry(node.clone()).or_insert_with(|| {
                        spawn(node_target(&client, &node), node.clone())
                    });
                    let (ack, done) = oneshot::channel();
                    let part = Change { kind: Kind::Shard, subscribe: change.subscribe, names, ack };
                    if session.ctl.send(part).await.is_ok() {
                        acks.push(done);
                    }
                }
                let ack = change.ack;
                tokio::spawn(async move {
                    for done in acks {
                        match done.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                let _ = ack.send(Err(e));
                                return;
                            }
                            Err(_) => {
                                let _ = ack.send(Err(Error::Closed));
                                return;
                            }
                        }
                    }
                    let _ = ack.send(Ok(()));
                });
            }
            Some((addr, notice)) = notices.recv() => {
                // Shard channels to place again: the one the server took away, or all of a
                // node that went down (those whose slot moved; the others stay, and their
                // session resubscribes when the node is back).
                let moving: Vec<Bytes> = match notice {
                    Notice::Evicted { channel } => {
                        placed.remove(&channel);
                        vec![channel]
                    }
                    Notice::Down if addr.is_empty() => continue,
                    Notice::Down => placed
                        .iter()
                        .filter(|(_, n)| **n == addr)
                        .map(|(c, _)| c.clone())
                        .collect(),
                };
                if moving.is_empty() {
                    continue;
                }
                client.refresh_cluster_map().await;
                for channel in moving {
                    let Ok(node) = shard_owner(&client, &channel).await else { continue };
                    if placed.get(&channel) == Some(&node) {
                        continue;
                    }
                    if let Some(old) = placed.insert(channel.clone(), node.clone())
                        && let Some(s) = shards.get(&old)
                    {
                        // The old node may be down: its session just forgets the channel.
                        let (ack, _) = oneshot::channel();
                        let _ = s.ctl.try_send(Change { kind: Kind::Shard, subscribe: false, names: vec![channel.clone()], ack });
                    }
                    let session = shards.entry(node.clone()).or_insert_with(|| {
                        spawn(node_target(&client, &node), node.clone())
                    });
                    let (ack, _) = oneshot::channel();
                    let _ = session.ctl.send(Change { kind: Kind::Shard, subscribe: true, names: vec![channel], ack }).await;
                }
            }
        }
    }
}

/// The `host:port` of the primary serving `channel`'s slot.
async fn shard_owner(client: &Client, channel: &Bytes) -> Result<String, Error> {
    let Mode::Cluster(router) = &client.inner.mode else {
        return Ok(client.addr());
    };
    let pool = router
        .primary_for(crate::cluster::key_slot(channel))
        .await?;
    Ok(pool.addr.to_string())
}

/// A session target for the node at `addr`.
fn node_target(client: &Client, addr: &str) -> Target {
    let settings = match &client.inner.mode {
        Mode::Cluster(router) => router.settings_of(addr),
        Mode::Single(_) => None,
    };
    Target::Fixed(settings.unwrap_or_else(|| client.inner.config.clone()))
}

fn write_change(out: &mut BytesMut, kind: Kind, subscribe: bool, names: &[Bytes]) {
    if kind == Kind::Shard && names.len() > 1 {
        // One command per slot: a cluster refuses shard channels of several slots in one
        // (CROSSSLOT); the server confirms each channel either way.
        let mut by_slot: std::collections::BTreeMap<u16, Vec<Bytes>> = Default::default();
        for n in names {
            by_slot
                .entry(crate::cluster::key_slot(n))
                .or_default()
                .push(n.clone());
        }
        if by_slot.len() > 1 {
            for group in by_slot.values() {
                write_change(out, kind, subscribe, group);
            }
            return;
        }
    }
    let verb: &[u8] = match (kind, subscribe) {
        (Kind::Channel, true) => b"SUBSCRIBE",
        (Kind::Channel, false) => b"UNSUBSCRIBE",
        (Kind::Pattern, true) => b"PSUBSCRIBE",
        (Kind::Pattern, false) => b"PUNSUBSCRIBE",
        (Kind::Shard, true) => b"SSUBSCRIBE",
        (Kind::Shard, false) => b"SUNSUBSCRIBE",
    };
    let mut args: Vec<&[u8]> = vec![verb];
    args.extend(names.iter().map(|n| &n[..]));
    encode_command(out, &args);
}

enum Event {
    Message(Message),
    Confirmation,
    /// `sunsubscribe` for this channel: asked for, or the server's (the slot moved).
    ShardUnsubscribed(Bytes),
    Error(Bytes),
    Other,
}

fn classify(frame: Frame) -> Event {
    let items = match frame {
        Frame::Array(v) | Frame::Push(v) => v,
        Frame::Error(e) => return Event::Error(e),
        _ => return Event::Other,
    };
    let kind = items
        .first()
        .and_then(Frame::as_bytes)
        .map(|b| b.to_ascii_lowercase());
    let text = |i: usize| {
        items
            .get(i)
            .and_then(Frame::as_bytes)
            .cloned()
            .unwrap_or_default()
    };
    match kind.as_deref() {
        Some(b"message") | Some(b"smessage") => Event::Message(Message {
            channel: text(1),
            pattern: None,
            payload: text(2),
        }),
        Some(b"pmessage") => Event::Message(Message {
            channel: text(2),
            pattern: Some(text(1)),
            payload: text(3),
        }),
        Some(b"sunsubscribe") => Event::ShardUnsubscribed(text(1)),
        Some(b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" | b"ssubscribe") => {
            Event::Confirmation
        }
        _ => Event::Other,
    }
}
