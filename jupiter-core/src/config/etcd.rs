//! etcd as a dynamic configuration source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{DynamicEntry, DynamicLayer, DynamicSource};
use crate::backoff::Backoff;

/// Watches a key prefix in etcd and delivers its content as configuration.
///
/// Under the prefix, a key is either a key path with a value (`{prefix}redis.main.pool-size` =
/// `16`; `/` works as well as `.` between keys) or, when it ends in `.toml`, a whole TOML
/// document merged at the root (Go Jupiter keeps a whole document in one key).
///
/// etcd-client does not re-establish watches: this source lists the prefix, watches from the
/// listed revision + 1 (so nothing is lost between list and watch), and on any error or a
/// compacted revision starts over after a jittered backoff. Every change sends the complete
/// content, so a restart of etcd converges on its true state.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), jupiter_core::Error> {
/// use std::time::Duration;
/// use jupiter_core::config::{Config, EtcdSource};
///
/// let config = Config::builder().file("app.toml").build()?;
/// config.attach(EtcdSource::new(["http://127.0.0.1:2379"], "/jupiter/myapp/config/"), Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdSource {
    endpoints: Vec<String>,
    prefix: String,
    options: Option<ConnectOptions>,
}

impl EtcdSource {
    /// A source for keys under `prefix` on the cluster at `endpoints`.
    pub fn new<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<String>,
    ) -> Self {
        EtcdSource {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            options: None,
        }
    }

    /// Connect options (TLS, user, timeouts). Default: 3 s connect timeout, 10 s keep-alive
    /// interval with a 5 s timeout, so a dead connection is noticed even with no traffic.
    #[must_use]
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    fn layer(&self, content: &BTreeMap<String, String>) -> DynamicLayer {
        let entries = content
            .iter()
            .map(|(key, value)| {
                let rel = key[self.prefix.len()..].trim_start_matches('/');
                let document = rel.ends_with(".toml");
                DynamicEntry {
                    key: key.clone(),
                    path: if document {
                        String::new()
                    } else {
                        rel.to_owned()
                    },
                    value: value.clone(),
                    document,
                }
            })
            .collect();
        DynamicLayer {
            source: Arc::from("etcd"),
            entries,
        }
    }

    async fn session(
        &self,
        tx: &mpsc::Sender<DynamicLayer>,
        backoff: &mut Backoff,
    ) -> Result<(), etcd_client::Error> {
        let options = self.options.clone().unwrap_or_else(|| {
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
                .with_keep_alive_while_idle(true)
        });
        let mut client = Client::connect(&self.endpoints, Some(options)).await?;
        let listed = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        let mut content = BTreeMap::new();
        for kv in listed.kvs() {
            if let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) {
                content.insert(k.to_owned(), v.to_owned());
            } else {
                tracing::warn!(key = ?String::from_utf8_lossy(kv.key()), "etcd config key or value is not UTF-8; ignored");
            }
        }
        if tx.send(self.layer(&content)).await.is_err() {
            return Ok(());
        }
        let mut stream = client
            .watch(
                self.prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        backoff.reset();
        while let Some(resp) = stream.message().await? {
            if resp.canceled() || resp.compact_revision() > 0 {
                tracing::warn!(
                    reason = resp.cancel_reason(),
                    "etcd config watch canceled; listing again"
                );
                return Err(etcd_client::Error::WatchError("watch canceled".into()));
            }
            if resp.events().is_empty() {
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                match event.event_type() {
                    EventType::Put => match kv.value_str() {
                        Ok(v) => {
                            content.insert(key.to_owned(), v.to_owned());
                        }
                        Err(_) => tracing::warn!(key, "etcd config value is not UTF-8; ignored"),
                    },
                    EventType::Delete => {
                        content.remove(key);
                    }
                }
            }
            if tx.send(self.layer(&content)).await.is_err() {
                return Ok(());
            }
        }
        Err(etcd_client::Error::WatchError("watch stream ended".into()))
    }
}

impl DynamicSource for EtcdSource {
    fn name(&self) -> String {
        format!("etcd {} prefix {:?}", self.endpoints.join(","), self.prefix)
    }

    fn run(self: Box<Self>, tx: mpsc::Sender<DynamicLayer>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                match self.session(&tx, &mut backoff).await {
                    Ok(()) => return,
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?delay, endpoints = ?self.endpoints, "etcd config source failed");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        })
    }
}
