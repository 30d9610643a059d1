//! Redis as L2, through redis-client (standalone or cluster).
//!
//! Invalidations: with a tracking client (`tracking = "default"` or `"bcast"`, RESP3) the
//! server reports changed keys itself, and a lost tracking connection reports "everything".
//! (With default tracking the server reports keys the client read; the cache reads back what
//! it writes, in the same round trip, so its own puts are tracked too. Broadcast tracking
//! with the cache's prefix needs no reads.)
//! Otherwise every `put`/`invalidate` is announced on a pub/sub channel per cache
//! (`{prefix}invalidations`), and every instance listens there; an instance skips its own
//! announcements (each carries the sender's id).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use redis_client::cmds::{self, Expiry, SetOptions};
use redis_client::{Client, Invalidation};

use super::{Invalidated, L2, L2Error};

/// Bytes of the sender id at the front of a pub/sub announcement.
const ID_LEN: usize = 16;

/// Redis as the second level.
#[derive(Clone, Debug)]
pub struct RedisL2 {
    client: Client,
    /// This instance's id in pub/sub announcements.
    id: [u8; ID_LEN],
}

impl RedisL2 {
    /// L2 on `client`; invalidations through client tracking when the client tracks, else
    /// through pub/sub on a channel per cache.
    pub fn new(client: Client) -> RedisL2 {
        let mut id = [0u8; ID_LEN];
        for b in &mut id {
            *b = fastrand::u8(..);
        }
        RedisL2 { client, id }
    }

    fn tracks(&self) -> bool {
        self.client.config().tracking != redis_client::TrackingMode::Off
    }
}

fn channel(prefix: &[u8]) -> Bytes {
    let mut c = prefix.to_vec();
    c.extend_from_slice(b"invalidations");
    Bytes::from(c)
}

impl L2 for RedisL2 {
    fn bound_calls(&mut self, timeout: Duration) -> bool {
        // The connections already track one deadline per request.
        self.client = self.client.with_timeout(timeout);
        true
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Bytes>, L2Error>> {
        Box::pin(async move { Ok(self.client.get::<Option<Bytes>>(key).await?) })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Result<Vec<Option<Bytes>>, L2Error>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            Ok(self.client.mget::<Vec<Option<Bytes>>>(keys).await?)
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async move {
            let options = SetOptions {
                expiry: Some(Expiry::In(ttl)),
                ..SetOptions::default()
            };
            if !self.tracks() {
                let () = self.client.set_with(key, value, options).await?;
                return Ok(());
            }
            // Default tracking reports only keys this client read: a value it wrote (and
            // keeps in L1) must be read too, or others' changes to it would go unheard. In the
            // same write, on the same connection (and node).
            let mut p = self.client.pipeline();
            p.add(cmds::set_with(key, value, options))
                .add(cmds::exists(&[key]));
            let ((), _): ((), u64) = p.query().await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, keys: &'a [Bytes]) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async move {
            if !keys.is_empty() {
                self.client.del(keys).await?;
            }
            Ok(())
        })
    }

    fn invalidations(&self, prefix: &[u8]) -> Option<BoxStream<'static, Invalidated>> {
        if self.tracks() {
            let stream = self.client.invalidations().ok()?;
            let shadow = self
                .client
                .config()
                .shadow_prefix
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()));
            return Some(
                stream
                    .map(move |inv| match inv {
                        Invalidation::Keys(keys) => Invalidated::Keys(
                            keys.into_iter()
                                .map(|k| match &shadow {
                                    Some(p) if k.starts_with(p) => (true, k.slice(p.len()..)),
                                    _ => (false, k),
                                })
                                .collect(),
                        ),
                        _ => Invalidated::All,
                    })
                    .boxed(),
            );
        }
        Some(subscription(self.client.clone(), channel(prefix), self.id))
    }

    fn announce<'a>(
        &'a self,
        prefix: &'a [u8],
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async move {
            if self.tracks() {
                return Ok(());
            }
            // One channel for live and shadow announcements (a channel is no key; shadow
            // mapping leaves it alone): the payload says which. `[id][shadow][key]`.
            let channel = channel(prefix);
            let shadow = u8::from(jupiter_core::shadow::is_shadow());
            for key in keys {
                let mut payload = BytesMut::with_capacity(ID_LEN + 1 + key.len());
                payload.extend_from_slice(&self.id);
                payload.extend_from_slice(&[shadow]);
                payload.extend_from_slice(key);
                self.client.publish(&channel, payload.freeze()).await?;
            }
            Ok(())
        })
    }
}

/// A subscriber on `channel` as a stream of keys announced by other instances.
fn subscription(
    client: Client,
    channel: Bytes,
    own: [u8; ID_LEN],
) -> BoxStream<'static, Invalidated> {
    futures::stream::unfold(None, move |sub: Option<redis_client::Subscriber>| {
        let (client, channel) = (client.clone(), channel.clone());
        async move {
            let mut sub = match sub {
                Some(s) => s,
                None => {
                    let s = client.subscriber();
                    // The subscription is kept and made once the server answers; the first
                    // confirmation may time out while it is down.
                    let _ = s.subscribe(&[channel]).await;
                    s
                }
            };
            loop {
                let msg = match sub.next_event().await? {
                    redis_client::SubscriberEvent::Message(m) => m,
                    // A lost connection: announcements may have been missed.
                    _ => return Some((Invalidated::All, Some(sub))),
                };
                let p = &msg.payload;
                match (p.get(..ID_LEN), p.get(ID_LEN)) {
                    (Some(id), _) if id == own => continue,
                    (Some(_), Some(&shadow)) => {
                        let key = p.slice(ID_LEN + 1..);
                        return Some((Invalidated::Keys(vec![(shadow == 1, key)]), Some(sub)));
                    }
                    // Not an announcement this cache can read: it may mean anything.
                    _ => return Some((Invalidated::All, Some(sub))),
                }
            }
        }
    })
    .boxed()
}
