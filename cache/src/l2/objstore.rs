//! objstore as L2, through its client.
//!
//! Invalidations: objstore's own change feed. The cache watches its prefix twice, once in the
//! live and once in the shadow namespace (a watch under a shadow context watches the shadow
//! namespace), so every write, delete, expiry or eviction under it, by any instance, is heard.
//! A watch that breaks or falls behind reports "everything" and is opened again.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use jupiter_core::shadow::ShadowContext;
use objstore::client::{Client, PutOptions};

use super::{Invalidated, L2, L2Error};

/// objstore as the second level.
#[derive(Clone, Debug)]
pub struct ObjstoreL2 {
    client: Client,
}

impl ObjstoreL2 {
    /// L2 on `client`.
    pub fn new(client: Client) -> ObjstoreL2 {
        ObjstoreL2 { client }
    }
}

impl L2 for ObjstoreL2 {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Bytes>, L2Error>> {
        Box::pin(async move { Ok(self.client.get(key).await?.map(|o| o.value)) })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Result<Vec<Option<Bytes>>, L2Error>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let found = self.client.batch_get(keys).await?;
            Ok(found.into_iter().map(|o| o.map(|o| o.value)).collect())
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async move {
            let options = PutOptions {
                ttl: Some(ttl),
                ..PutOptions::default()
            };
            self.client.put(key, value, options).await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, keys: &'a [Bytes]) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async move {
            for key in keys {
                self.client.delete(key).await?;
            }
            Ok(())
        })
    }

    fn invalidations(&self, prefix: &[u8]) -> Option<BoxStream<'static, Invalidated>> {
        let live = feed(self.client.clone(), Bytes::copy_from_slice(prefix), false);
        let shadow = feed(self.client.clone(), Bytes::copy_from_slice(prefix), true);
        Some(futures::stream::select(live, shadow).boxed())
    }
}

/// One namespace's changes under `prefix`, as invalidations, the watch reopened (from now)
/// whenever it ends; each reopening reports "everything" (what happened in between is
/// unknown).
fn feed(client: Client, prefix: Bytes, shadow: bool) -> BoxStream<'static, Invalidated> {
    struct Feed {
        client: Client,
        prefix: Bytes,
        ctx: Option<ShadowContext>,
        watch:
            Option<BoxStream<'static, Result<objstore::client::Change, objstore::client::Error>>>,
        opened: bool,
    }
    let state = Feed {
        client,
        prefix,
        ctx: shadow.then(ShadowContext::new),
        watch: None,
        opened: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.watch.is_none() {
                let watch = loop {
                    let open = st.client.watch(&st.prefix, 0, false);
                    match ShadowContext::scope(st.ctx.clone(), open).await {
                        Ok(w) => break w.boxed(),
                        Err(e) => {
                            tracing::debug!(error = %e, "cache: objstore watch failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                st.watch = Some(watch);
                if std::mem::replace(&mut st.opened, true) {
                    return Some((Invalidated::All, st));
                }
            }
            let next = st.watch.as_mut().map(|w| w.next());
            match next {
                Some(n) => match n.await {
                    Some(Ok(change)) => {
                        let inv = Invalidated::Keys(vec![(st.ctx.is_some(), change.key)]);
                        return Some((inv, st));
                    }
                    // Ended or broke: open it again, then report everything.
                    _ => st.watch = None,
                },
                None => st.watch = None,
            }
        }
    })
    .boxed()
}
