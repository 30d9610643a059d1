//! RESP3 client-side caching (`CLIENT TRACKING`): the server's invalidation pushes, and the
//! connection losses that make them incomplete, as one stream per subscriber.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::conn::{ConnEvent, Events};
use crate::resp::Frame;
use crate::{Client, Error};

/// Events buffered per subscriber before a slow one misses some (and is told so with
/// [`Invalidation::Lagged`]).
const BUFFER: usize = 4096;

/// What a tracking client hears. A cache keyed by Redis keys drops the keys named, and drops
/// everything on any other event: it cannot know what else changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// These keys changed, expired or were evicted (as sent: shadow keys carry their prefix).
    Keys(Vec<Bytes>),
    /// The server flushed its keys (`FLUSHALL`, `FLUSHDB`).
    Flushed,
    /// A tracking connection to this server was lost: invalidations sent meanwhile are gone.
    Lost {
        /// The server's `host:port`.
        addr: String,
    },
    /// This subscriber fell behind and missed this many events.
    Lagged(u64),
}

/// The hub every tracking connection of a client reports to.
#[derive(Debug)]
pub(crate) struct Tracking {
    tx: broadcast::Sender<Invalidation>,
}

impl Tracking {
    pub(crate) fn new() -> Tracking {
        Tracking {
            tx: broadcast::channel(BUFFER).0,
        }
    }

    /// The sink for connections' events: parses invalidation pushes, reports losses.
    pub(crate) fn events(&self) -> Events {
        let tx = self.tx.clone();
        Arc::new(move |event| {
            let inv = match event {
                ConnEvent::Push(frame) => match parse(frame) {
                    Some(inv) => inv,
                    None => return,
                },
                ConnEvent::Down(addr) => Invalidation::Lost {
                    addr: addr.to_owned(),
                },
                ConnEvent::Up => return,
            };
            // No subscriber: nobody caches.
            let _ = tx.send(inv);
        })
    }
}

/// An invalidation push: `["invalidate", [key, ...]]`, or `["invalidate", null]` on a flush.
fn parse(frame: Frame) -> Option<Invalidation> {
    let Frame::Push(items) = frame else {
        return None;
    };
    let mut items = items.into_iter();
    let kind = items.next()?;
    if !kind
        .as_bytes()
        .is_some_and(|k| k.eq_ignore_ascii_case(b"invalidate"))
    {
        return None;
    }
    match items.next()? {
        Frame::Null => Some(Invalidation::Flushed),
        Frame::Array(keys) | Frame::Set(keys) => Some(Invalidation::Keys(
            keys.into_iter()
                .filter_map(|k| k.as_bytes().cloned())
                .collect(),
        )),
        _ => None,
    }
}

/// The invalidation stream of a tracking client ([`Client::invalidations`]): every event
/// from the moment it was made, in order; ends when the client is dropped.
pub struct Invalidations {
    rx: BroadcastStream<Invalidation>,
}

impl std::fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidations").finish_non_exhaustive()
    }
}

impl Invalidations {
    /// The next event; `None` once the client is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no event is lost.
    pub async fn next(&mut self) -> Option<Invalidation> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for Invalidations {
    type Item = Invalidation;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Invalidation>> {
        Pin::new(&mut self.rx).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(inv) => inv,
                Err(BroadcastStreamRecvError::Lagged(n)) => Invalidation::Lagged(n),
            })
        })
    }
}

impl Client {
    /// The invalidations of a client with tracking on (`tracking = "default"` or `"bcast"`,
    /// RESP3): keys others changed that this client may have cached, flushes, and lost
    /// tracking connections. Each call is a new subscriber that sees events from now on.
    ///
    /// With default tracking the server reports only keys this client read while tracking:
    /// read through this client (not a dedicated connection) to have a key tracked.
    ///
    /// # Errors
    ///
    /// Tracking is off.
    pub fn invalidations(&self) -> Result<Invalidations, Error> {
        let Some(tracking) = &self.inner.tracking else {
            return Err(Error::Unsupported {
                command: "CLIENT TRACKING".to_owned(),
                reason: "tracking is off; build the client with tracking = \"default\" or \"bcast\" (RESP3)",
            });
        };
        Ok(Invalidations {
            rx: BroadcastStream::new(tracking.tx.subscribe()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invalidation_pushes() {
        let keys = Frame::Push(vec![
            Frame::Bulk(Bytes::from_static(b"invalidate")),
            Frame::Array(vec![Frame::Bulk(Bytes::from_static(b"k1"))]),
        ]);
        assert_eq!(
            parse(keys),
            Some(Invalidation::Keys(vec![Bytes::from_static(b"k1")]))
        );
        let flush = Frame::Push(vec![
            Frame::Bulk(Bytes::from_static(b"invalidate")),
            Frame::Null,
        ]);
        assert_eq!(parse(flush), Some(Invalidation::Flushed));
        let other = Frame::Push(vec![Frame::Bulk(Bytes::from_static(b"message"))]);
        assert_eq!(parse(other), None);
        assert_eq!(parse(Frame::Null), None);
    }
}
