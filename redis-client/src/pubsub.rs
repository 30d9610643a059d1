//! Pub/sub on a connection of its own, resubscribed after every reconnect.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use jupiter_core::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::Error;
use crate::client::Client;
use crate::cmd::ToArg;
use crate::config::Settings;
use crate::resp::{Decoder, Frame, encode_command};

/// Messages buffered for a slow reader before the connection stops reading (and Redis's
/// `client-output-buffer-limit` eventually disconnects it; it then reconnects and resubscribes).
const MESSAGE_BUFFER: usize = 4096;

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
}

enum Control {
    Change {
        kind: Kind,
        subscribe: bool,
        names: Vec<Bytes>,
        ack: oneshot::Sender<Result<(), Error>>,
    },
}

/// A subscription connection: subscribe to channels and patterns, receive messages. After a
/// lost connection it reconnects and subscribes again to everything it had, so a subscriber
/// only misses what was published while it was disconnected.
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
    ctl: mpsc::Sender<Control>,
    messages: mpsc::Receiver<Message>,
    task: AbortHandle,
    /// How long a change waits for the server's confirmation: the connect timeout plus the
    /// command timeout (`None`: no command timeout).
    timeout: Option<std::time::Duration>,
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
    /// A subscriber on a connection of its own (connected in the background).
    pub fn subscriber(&self) -> Subscriber {
        let (ctl_tx, ctl_rx) = mpsc::channel(64);
        let (msg_tx, msg_rx) = mpsc::channel(MESSAGE_BUFFER);
        let config = Arc::clone(&self.inner.config);
        let timeout = config.timeout().map(|t| t + config.connect_timeout);
        let task = tokio::spawn(run(config, ctl_rx, msg_tx));
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
        let names: Vec<Bytes> = names.iter().map(crate::commands::arg_bytes).collect();
        if names.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.ctl
            .send(Control::Change {
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

    /// The next message; `None` once the subscriber's task ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no message is lost.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.messages.recv().await
    }
}

#[derive(Default)]
struct Wanted {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

/// A change waiting for its confirmations.
struct PendingAck {
    confirmations: usize,
    ack: oneshot::Sender<Result<(), Error>>,
}

async fn run(
    config: Arc<Settings>,
    mut ctl: mpsc::Receiver<Control>,
    messages: mpsc::Sender<Message>,
) {
    let mut wanted = Wanted::default();
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    // Changes asked for while disconnected, acknowledged after the resubscribe.
    let mut waiting: Vec<oneshot::Sender<Result<(), Error>>> = Vec::new();
    loop {
        let mut stream = match crate::conn::connect(&config).await {
            Ok(s) => {
                backoff.reset();
                s
            }
            Err(e) => {
                tracing::debug!(addr = %config.addr(), error = %e, "subscriber connect failed");
                let sleep = tokio::time::sleep(backoff.next_delay());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        c = ctl.recv() => match c {
                            Some(Control::Change { kind, subscribe, names, ack }) => {
                                apply(&mut wanted, kind, subscribe, &names);
                                waiting.push(ack);
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
        for (kind, set) in [
            (Kind::Channel, &wanted.channels),
            (Kind::Pattern, &wanted.patterns),
        ] {
            if !set.is_empty() {
                let names: Vec<Bytes> = set.iter().cloned().collect();
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
                        Some(Control::Change { kind, subscribe, names, ack }) => {
                            apply(&mut wanted, kind, subscribe, &names);
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
                                    if messages.send(m).await.is_err() {
                                        return Ok(());
                                    }
                                }
                                Event::Confirmation => {
                                    if let Some(first) = acks.iter_mut().find(|a| a.confirmations > 0) {
                                        first.confirmations -= 1;
                                    }
                                    settle(&mut acks);
                                }
                                Event::Error(e) => {
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
                waiting.extend(acks.into_iter().map(|a| a.ack));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Acknowledges, in order, the changes whose confirmations all arrived.
fn settle(acks: &mut Vec<PendingAck>) {
    while acks.first().is_some_and(|a| a.confirmations == 0) {
        let a = acks.remove(0);
        let _ = a.ack.send(Ok(()));
    }
}

fn apply(wanted: &mut Wanted, kind: Kind, subscribe: bool, names: &[Bytes]) {
    let set = match kind {
        Kind::Channel => &mut wanted.channels,
        Kind::Pattern => &mut wanted.patterns,
    };
    for n in names {
        if subscribe {
            set.insert(n.clone());
        } else {
            set.remove(n);
        }
    }
}

fn write_change(out: &mut BytesMut, kind: Kind, subscribe: bool, names: &[Bytes]) {
    let verb: &[u8] = match (kind, subscribe) {
        (Kind::Channel, true) => b"SUBSCRIBE",
        (Kind::Channel, false) => b"UNSUBSCRIBE",
        (Kind::Pattern, true) => b"PSUBSCRIBE",
        (Kind::Pattern, false) => b"PUNSUBSCRIBE",
    };
    let mut args: Vec<&[u8]> = vec![verb];
    args.extend(names.iter().map(|n| &n[..]));
    encode_command(out, &args);
}

enum Event {
    Message(Message),
    Confirmation,
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
        Some(
            b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" | b"ssubscribe"
            | b"sunsubscribe",
        ) => Event::Confirmation,
        _ => Event::Other,
    }
}
