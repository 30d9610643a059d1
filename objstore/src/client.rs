//! The Rust client: our own types (not raw protobuf), a deadline on every call, and retries
//! with backoff for calls that are safe to repeat (reads).
//!
//! # Retries
//!
//! Reads (`get`, `head`, `list_page`, `batch_get`, `download`) are idempotent: one that fails
//! with [`Error::Unavailable`] is made again, up to [`ClientConfig::read_attempts`] times in
//! all, with jittered exponential backoff (20 ms doubling up to 1 s). A read that times out is
//! not repeated: it has used its whole deadline already.
//!
//! Writes (`put`, `delete`, `delete_with`, `batch_put`) are never repeated, conditional ones
//! included: if the server applied a write whose reply was lost, the repeat of a conditional
//! write would fail its own condition and report a failure for a write that happened. A write
//! that failed with an error whose [`Error::retryable`] is true may or may not have been
//! applied; the caller decides (a conditional write is the safe way to repeat one).
//!
//! # Deadlines
//!
//! Every call is bounded by [`ClientConfig::timeout`] on the client's own clock (connecting
//! included) and carries it to the server as `grpc-timeout`. Streams are bounded per message:
//! opening a download or watch, and each chunk of a download, must arrive within the timeout.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto;
use crate::proto::object_store_client::ObjectStoreClient;

/// Objects larger than this are uploaded in chunks by [`Client::put`]; read them back with
/// [`Client::download`].
pub const STREAM_THRESHOLD: usize = 4 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

pub use crate::error::Error;

/// An object's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Revision that created the key.
    pub create_revision: u64,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Writes since creation.
    pub version: u64,
    /// Entity tag.
    pub etag: String,
    /// Value size in bytes.
    pub size: u64,
    /// MIME type (empty if none).
    pub content_type: String,
    /// User metadata.
    pub metadata: HashMap<String, String>,
    /// Expiry (Unix ms), if any.
    pub expires_at_ms: Option<u64>,
}

impl From<proto::ObjectMeta> for Info {
    fn from(m: proto::ObjectMeta) -> Info {
        Info {
            create_revision: m.create_revision,
            mod_revision: m.mod_revision,
            version: m.version,
            etag: m.etag,
            size: m.size,
            content_type: m.content_type,
            metadata: m.metadata,
            expires_at_ms: (m.expires_at_ms > 0).then_some(m.expires_at_ms),
        }
    }
}

/// A value with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The value.
    pub value: Bytes,
    /// Its metadata.
    pub info: Info,
}

/// Options of a write. The default is an unconditional write with no expiry, content type
/// or metadata.
///
/// At most one condition applies: `if_absent`, else `if_revision`, else `if_etag`. A write
/// whose condition fails is [`Error::Precondition`].
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Time to live, in whole milliseconds (at least 1). Default: none.
    pub ttl: Option<Duration>,
    /// MIME type. Default: none.
    pub content_type: Option<String>,
    /// User metadata. Default: empty.
    pub metadata: HashMap<String, String>,
    /// Only if the key does not exist. Default: false.
    pub if_absent: bool,
    /// Only if the key's current mod revision is this. Default: none.
    pub if_revision: Option<u64>,
    /// Only if the key's current ETag is this. Default: none.
    pub if_etag: Option<String>,
}

impl PutOptions {
    fn condition(&self) -> Option<proto::Condition> {
        condition(self.if_absent, self.if_revision, self.if_etag.as_deref())
    }
}

/// The one condition that applies, in order of precedence: if-absent, if-revision, if-etag.
fn condition(
    if_absent: bool,
    if_revision: Option<u64>,
    if_etag: Option<&str>,
) -> Option<proto::Condition> {
    use proto::condition::Kind;
    let kind = match (if_absent, if_revision, if_etag) {
        (true, _, _) => Kind::IfAbsent(true),
        (false, Some(r), _) => Kind::IfRevision(r),
        (false, None, Some(t)) => Kind::IfEtag(t.to_owned()),
        (false, None, None) => return None,
    };
    Some(proto::Condition { kind: Some(kind) })
}

/// Conditions of a delete. The default deletes unconditionally.
///
/// At most one condition applies: `if_revision`, else `if_etag`. A delete whose condition
/// fails, or that has a condition and finds no key, is [`Error::Precondition`].
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Only if the key's current mod revision is this. Default: none.
    pub if_revision: Option<u64>,
    /// Only if the key's current ETag is this. Default: none.
    pub if_etag: Option<String>,
}

impl DeleteOptions {
    fn condition(&self) -> Option<proto::Condition> {
        condition(false, self.if_revision, self.if_etag.as_deref())
    }
}

/// An object being downloaded: its metadata, then its value a chunk at a time (see
/// [`Client::download_stream`]).
pub struct Download {
    /// The object's metadata; `info.size` is what the chunks add up to.
    pub info: Info,
    chunks: tonic::Streaming<proto::DownloadChunk>,
    received: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("info", &self.info)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// The next chunk of the value (at most 64 KiB), `None` after the last one.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if a chunk does not arrive within the client's timeout; the stream
    /// broke ([`Error::Unavailable`] and others, see [`Error`]); or the server sent more or
    /// fewer bytes than `info.size` ([`Error::Other`] with `DATA_LOSS`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a chunk not yet returned stays in the stream for the next call.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let next = tokio::time::timeout(self.timeout, self.chunks.message())
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|s| Error::from_status(s, self.timeout))?;
        let short = |received: u64, info: &Info| Error::Other {
            code: Code::DataLoss,
            message: format!(
                "download sent {received} bytes of an object of {} bytes",
                info.size
            ),
        };
        match next {
            None if self.received == self.info.size => Ok(None),
            None => Err(short(self.received, &self.info)),
            Some(proto::DownloadChunk {
                part: Some(proto::download_chunk::Part::Data(d)),
            }) => {
                self.received += d.len() as u64;
                if self.received > self.info.size {
                    return Err(short(self.received, &self.info));
                }
                Ok(Some(d))
            }
            Some(_) => Err(Error::Other {
                code: Code::Internal,
                message: "download sent a second metadata message".into(),
            }),
        }
    }

    /// The rest of the value, assembled.
    ///
    /// # Errors
    ///
    /// As [`Download::chunk`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the chunks read so far are lost.
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        let rest = self.info.size.saturating_sub(self.received);
        let mut value = BytesMut::with_capacity(usize::try_from(rest).unwrap_or(0));
        while let Some(chunk) = self.chunk().await? {
            value.extend_from_slice(&chunk);
        }
        Ok(value.freeze())
    }
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its revision.
    pub revision: u64,
    /// The key.
    pub key: Bytes,
    /// `put`, `delete`, `expire` or `evict`.
    pub kind: &'static str,
    /// For puts: the metadata, and the value if asked for.
    pub object: Option<Object>,
}

/// Client settings. Its `Debug` output never shows the token.
#[derive(Clone)]
pub struct ClientConfig {
    /// Deadline of one call (of one attempt, for reads), connecting included. Default is 5
    /// seconds.
    pub timeout: Duration,
    /// Attempts for reads that find the server unavailable (1: no retry). Default is 3.
    pub read_attempts: u32,
    /// Bearer token, if the server wants one. Default: none.
    pub token: Option<String>,
    /// TLS: the CA that signed the server's certificate. Used for `https://` addresses (and
    /// makes a bare `host:port` one). Default: none (plaintext).
    pub tls: Option<ClientTls>,
}

/// TLS settings of a client.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// PEM certificate(s) of the CA to trust.
    pub ca_pem: Vec<u8>,
    /// The name the server's certificate must carry; by default the address's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("timeout", &self.timeout)
            .field("read_attempts", &self.read_attempts)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(5),
            read_attempts: 3,
            token: None,
            tls: None,
        }
    }
}

/// A write by a shadow request that the calling service serves in `watch` mode is refused
/// here, before it is sent: watch mode writes nothing anywhere (the objstore server's own
/// switch may be `on`, and the tag it receives does not carry the caller's mode).
fn refuse_watched_write() -> Result<(), Error> {
    use jupiter_core::shadow::{ShadowContext, ShadowMode};
    match ShadowContext::current() {
        Some(ctx) if ctx.mode() == ShadowMode::Watch => Err(Error::Refused(
            "shadow traffic in watch mode: writes are refused".into(),
        )),
        _ => Ok(()),
    }
}

/// The endpoint for `addr`: `http://` unless TLS is configured or the address says `https://`.
fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint, Error> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
        addr: addr.to_owned(),
        source,
    };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else if config.tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| err(e.into()))?
        .connect_timeout(config.timeout)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let tls = config.tls.as_ref().ok_or_else(|| {
            err("an https:// address needs the client's TLS settings (the CA to trust)".into())
        })?;
        let mut t = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        if let Some(d) = &tls.domain {
            t = t.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(t).map_err(|e| err(e.into()))?;
    }
    Ok(endpoint)
}

/// A handle to one objstore server. Cheap to clone (the clones share one connection).
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), objstore::client::Error> {
/// use bytes::Bytes;
/// use objstore::client::{Client, ClientConfig, DeleteOptions, PutOptions};
///
/// let c = Client::connect("127.0.0.1:7070", ClientConfig::default()).await?;
/// let info = c.put(b"k", Bytes::from_static(b"v"), PutOptions::default()).await?;
/// // Delete only what we wrote: if another writer came in between, this is
/// // `Error::Precondition` and its `current_revision()` says where the key is now.
/// let only_ours = DeleteOptions {
///     if_revision: Some(info.mod_revision),
///     ..DeleteOptions::default()
/// };
/// c.delete_with(b"k", only_ours).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    grpc: ObjectStoreClient<Channel>,
    config: ClientConfig,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    ///
    /// # Errors
    ///
    /// The address is invalid or the server cannot be reached within the timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is kept of a connection that did not finish.
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, Error> {
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        let endpoint = endpoint(addr, &config)?;
        // `connect_timeout` bounds the TCP connect only; this bounds the TLS handshake too,
        // which a peer that accepts and never answers would stall forever.
        let channel = tokio::time::timeout(config.timeout, endpoint.connect())
            .await
            .map_err(|_| {
                connect_err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", config.timeout),
                )))
            })?
            .map_err(|e| connect_err(e.into()))?;
        Ok(Client {
            grpc: ObjectStoreClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            config,
        })
    }

    /// A client that connects on first use (and reconnects after failures): calls to an
    /// unreachable server fail with [`Error::Unavailable`] instead of failing here.
    ///
    /// # Errors
    ///
    /// The address is invalid.
    pub fn connect_lazy(addr: &str, config: ClientConfig) -> Result<Client, Error> {
        let endpoint = endpoint(addr, &config)?;
        Ok(Client {
            grpc: ObjectStoreClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            config,
        })
    }

    /// Asks the server whether it knows about shadow traffic: a `Head` of `key` sent as shadow
    /// traffic must come back with the shadow acknowledgement header (a not-found answer is
    /// fine). A load tool calls this before it sends shadow traffic to a live server.
    ///
    /// # Errors
    ///
    /// The server could not be asked; see [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn probe_shadow(&self, key: &[u8]) -> Result<bool, Error> {
        let ctx = jupiter_core::shadow::ShadowContext::new();
        let req = jupiter_core::shadow::ShadowContext::sync_scope(Some(ctx), || {
            self.request(proto::HeadRequest {
                key: Bytes::copy_from_slice(key),
            })
        });
        let acked =
            |m: &tonic::metadata::MetadataMap| m.get(jupiter_core::shadow::ACK_HEADER).is_some();
        let mut grpc = self.grpc.clone();
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, grpc.head(req)).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Ok(r)) => Ok(acked(r.metadata())),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(acked(s.metadata())),
            Ok(Err(s)) => Err(self.err(s)),
        }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = self.untimed_request(msg);
        r.set_timeout(self.config.timeout);
        r
    }

    /// A request with the token and the shadow tag but no `grpc-timeout` (watches).
    fn untimed_request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        self.authorize(&mut r);
        // Shadow traffic stays shadow traffic across this hop.
        if let Some(ctx) = jupiter_core::shadow::ShadowContext::current() {
            let mut headers = http::HeaderMap::new();
            ctx.inject(&mut headers);
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
                    tonic::metadata::MetadataValue::try_from(v.as_bytes()),
                ) {
                    r.metadata_mut().insert(k, v);
                }
            }
        }
        r
    }

    fn authorize<T>(&self, r: &mut Request<T>) {
        if let Some(t) = &self.config.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
    }

    fn err(&self, s: Status) -> Error {
        Error::from_status(s, self.config.timeout)
    }

    /// `call` within the client's deadline, on the client's clock: tonic's own deadline
    /// starts only once a connection is ready, so it misses a connect that never completes.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(r) => r.map_err(|s| self.err(s)),
            Err(_) => Err(Error::Timeout(self.config.timeout)),
        }
    }

    /// Runs a read with retries on [`Error::Unavailable`] (jittered exponential backoff).
    /// Each attempt is bounded by the deadline on its own.
    async fn read<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(ObjectStoreClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut backoff =
            jupiter_core::backoff::Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut attempt = 1;
        loop {
            match call(self.grpc.clone()).await {
                Ok(v) => return Ok(v),
                Err(Error::Unavailable(_)) if attempt < self.config.read_attempts => {
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `value` under `key`. Values larger than [`STREAM_THRESHOLD`] are uploaded in
    /// 64 KiB chunks (the whole upload within the timeout). Not retried (see the
    /// [module docs](self#retries)).
    ///
    /// # Errors
    ///
    /// [`Error::Precondition`] if a condition of `options` failed; see [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a write cancelled after it was sent may or may not be applied. (An
    /// upload cancelled before its last chunk stores nothing.)
    pub async fn put(&self, key: &[u8], value: Bytes, options: PutOptions) -> Result<Info, Error> {
        refuse_watched_write()?;
        let put = put_request(key, Bytes::new(), options);
        let mut grpc = self.grpc.clone();
        let reply = if value.len() > STREAM_THRESHOLD {
            let size = value.len();
            let header = proto::UploadChunk {
                part: Some(proto::upload_chunk::Part::Header(proto::UploadHeader {
                    put: Some(put),
                    size: size as u64,
                })),
            };
            let chunks = (0..size).step_by(CHUNK).map(move |at| proto::UploadChunk {
                part: Some(proto::upload_chunk::Part::Data(
                    value.slice(at..(at + CHUNK).min(size)),
                )),
            });
            let stream = tokio_stream::iter(std::iter::once(header).chain(chunks));
            self.bounded(grpc.upload(self.request(stream))).await
        } else {
            self.bounded(grpc.put(self.request(proto::PutRequest { value, ..put })))
                .await
        };
        Ok(reply?.into_inner().meta.unwrap_or_default().into())
    }

    /// Writes many objects in one call; each succeeds or fails on its own. The results are
    /// in the order of `items`. Not retried, and not split: the server takes at most
    /// [`MAX_BATCH`](crate::protocol::MAX_BATCH) writes and a request no larger than its
    /// largest object (plus 64 KiB) in one call.
    ///
    /// # Errors
    ///
    /// The outer error: the call as a whole failed (then none, some or all of the writes may
    /// have been applied). The inner ones: that write failed (a failed condition is
    /// [`Error::Precondition`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: writes cancelled after they were sent may or may not be applied.
    pub async fn batch_put<K: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, Bytes, PutOptions)>,
    ) -> Result<Vec<Result<Info, Error>>, Error> {
        refuse_watched_write()?;
        let puts: Vec<proto::PutRequest> = items
            .into_iter()
            .map(|(k, v, o)| put_request(k.as_ref(), v, o))
            .collect();
        let sent = puts.len();
        let mut grpc = self.grpc.clone();
        let results = self
            .bounded(grpc.batch_put(self.request(proto::BatchPutRequest { puts })))
            .await?
            .into_inner()
            .results;
        if results.len() != sent {
            return Err(Error::Other {
                code: Code::Internal,
                message: format!(
                    "batch put of {sent} writes came back with {} results",
                    results.len()
                ),
            });
        }
        Ok(results
            .into_iter()
            .map(|r| match Code::from_i32(r.code) {
                Code::Ok => Ok(r.put.and_then(|p| p.meta).unwrap_or_default().into()),
                code => {
                    let mut status = Status::new(code, r.message);
                    if let Some(rev) = r.current_revision {
                        status.metadata_mut().insert(
                            crate::protocol::CURRENT_REVISION,
                            tonic::metadata::MetadataValue::from(rev),
                        );
                    }
                    Err(self.err(status))
                }
            })
            .collect())
    }

    /// The object under `key`, or `None`. The value comes in one message; for values larger
    /// than [`STREAM_THRESHOLD`] prefer [`Client::download`]. Retried as a read.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, Error> {
        let key = Bytes::copy_from_slice(key);
        let r = self
            .read(|mut g| {
                let req = self.request(proto::GetRequest { key: key.clone() });
                self.bounded(async move { g.get(req).await })
            })
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some(Object {
                    value: r.value,
                    info: r.meta.unwrap_or_default().into(),
                }))
            }
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The objects under `keys`, in the order of `keys` (`None` for a key that does not
    /// exist). More keys than [`MAX_BATCH`](crate::protocol::MAX_BATCH) go in several calls,
    /// each retried as a read; the objects are not one snapshot of the store.
    ///
    /// # Errors
    ///
    /// See [`Error`]; one invalid key fails the call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Object>>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for part in keys.chunks(crate::protocol::MAX_BATCH) {
            let keys: Vec<Bytes> = part
                .iter()
                .map(|k| Bytes::copy_from_slice(k.as_ref()))
                .collect();
            let items = self
                .read(|mut g| {
                    let req = self.request(proto::BatchGetRequest { keys: keys.clone() });
                    self.bounded(async move { g.batch_get(req).await })
                })
                .await?
                .into_inner()
                .items;
            if items.len() != part.len() {
                return Err(Error::Other {
                    code: Code::Internal,
                    message: format!(
                        "batch get of {} keys came back with {} items",
                        part.len(),
                        items.len()
                    ),
                });
            }
            out.extend(items.into_iter().map(|i| {
                i.found.then(|| Object {
                    value: i.value,
                    info: i.meta.unwrap_or_default().into(),
                })
            }));
        }
        Ok(out)
    }

    /// The object under `key` through the Download stream, assembled: for large values,
    /// which [`Client::get`] would fetch in one message. The value arrives in chunks of 64
    /// KiB, each within the timeout. Retried as a read, from the start: an attempt that
    /// breaks off mid-stream keeps nothing.
    ///
    /// # Errors
    ///
    /// See [`Error`] and [`Download::chunk`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn download(&self, key: &[u8]) -> Result<Option<Object>, Error> {
        let key = Bytes::copy_from_slice(key);
        let r = self
            .read(|g| {
                let key = key.clone();
                async move {
                    let d = self.open_download(g, key).await?;
                    let info = d.info.clone();
                    Ok(Object {
                        value: d.bytes().await?,
                        info,
                    })
                }
            })
            .await;
        match r {
            Ok(o) => Ok(Some(o)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the Download stream of `key`: the object's metadata now, its value a chunk at a
    /// time from [`Download::chunk`]; `None` if there is no such key. Opening is retried as a
    /// read; a stream that breaks later is the caller's to reopen.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(c: objstore::client::Client) -> Result<(), objstore::client::Error> {
    /// if let Some(mut d) = c.download_stream(b"backups/today").await? {
    ///     let mut total = 0;
    ///     while let Some(chunk) = d.chunk().await? {
    ///         total += chunk.len();
    ///     }
    ///     assert_eq!(total as u64, d.info.size);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn download_stream(&self, key: &[u8]) -> Result<Option<Download>, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.read(|g| self.open_download(g, key.clone())).await {
            Ok(d) => Ok(Some(d)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a download up to its metadata message, within the deadline.
    async fn open_download(
        &self,
        mut grpc: ObjectStoreClient<Channel>,
        key: Bytes,
    ) -> Result<Download, Error> {
        let req = self.request(proto::DownloadRequest {
            key,
            // The server's default, 64 KiB.
            chunk_size: 0,
        });
        self.bounded(async move {
            let mut chunks = grpc.download(req).await?.into_inner();
            match chunks.message().await? {
                Some(proto::DownloadChunk {
                    part: Some(proto::download_chunk::Part::Meta(m)),
                }) => Ok(Download {
                    info: m.into(),
                    chunks,
                    received: 0,
                    timeout: self.config.timeout,
                }),
                _ => Err(Status::internal(
                    "download did not begin with the object's metadata",
                )),
            }
        })
        .await
    }

    /// The metadata of `key`, or `None`. Retried as a read.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn head(&self, key: &[u8]) -> Result<Option<Info>, Error> {
        let key = Bytes::copy_from_slice(key);
        match self
            .read(|mut g| {
                let req = self.request(proto::HeadRequest { key: key.clone() });
                self.bounded(async move { g.head(req).await })
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().meta.map(Info::from)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; returns the deletion's revision, `None` if it did not exist. Not
    /// retried.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a delete cancelled after it was sent may or may not be applied.
    pub async fn delete(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        self.delete_with(key, DeleteOptions::default()).await
    }

    /// Deletes `key` if the conditions of `options` hold; returns the deletion's revision,
    /// `None` if the key did not exist and there was no condition. Not retried, conditional or
    /// not (see the [module docs](self#retries)).
    ///
    /// # Errors
    ///
    /// [`Error::Precondition`] if the condition failed or found no key
    /// ([`Error::current_revision`] tells which); see [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a delete cancelled after it was sent may or may not be applied.
    pub async fn delete_with(
        &self,
        key: &[u8],
        options: DeleteOptions,
    ) -> Result<Option<u64>, Error> {
        refuse_watched_write()?;
        let mut grpc = self.grpc.clone();
        let req = self.request(proto::DeleteRequest {
            key: Bytes::copy_from_slice(key),
            condition: options.condition(),
        });
        match self.bounded(grpc.delete(req)).await {
            Ok(r) => Ok(Some(r.into_inner().revision)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of keys under `prefix`: `(key, info)` pairs in key order and the token of the
    /// next page (`None` on the last page). `limit` 0 is the server's default (1000); at most
    /// [`MAX_LIST`](crate::protocol::MAX_LIST). Pass `""` for the first page. Retried as a
    /// read.
    ///
    /// # Errors
    ///
    /// See [`Error`]; a token not from a previous page is [`Error::Invalid`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read.
    pub async fn list_page(
        &self,
        prefix: &[u8],
        limit: u32,
        token: &str,
    ) -> Result<(Vec<(Bytes, Info)>, Option<String>), Error> {
        let prefix = Bytes::copy_from_slice(prefix);
        let r = self
            .read(|mut g| {
                let req = self.request(proto::ListRequest {
                    prefix: prefix.clone(),
                    limit,
                    page_token: token.to_owned(),
                });
                self.bounded(async move { g.list(req).await })
            })
            .await?
            .into_inner();
        let items = r
            .items
            .into_iter()
            .map(|i| (i.key, i.meta.unwrap_or_default().into()))
            .collect();
        Ok((
            items,
            (!r.next_page_token.is_empty()).then_some(r.next_page_token),
        ))
    }

    /// Every key under `prefix`, page by page.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read (the pages read so far are dropped).
    pub async fn list_all(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Info)>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let (items, next) = self.list_page(prefix, 1000, &token).await?;
            out.extend(items);
            match next {
                Some(t) => token = t,
                None => return Ok(out),
            }
        }
    }

    /// Asks the server to write a snapshot now: `(objects, revision, bytes, path)`. The
    /// deadline is the timeout or 10 minutes, whichever is longer. Not retried.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as to the store; the snapshot may still be written.
    pub async fn snapshot(&self) -> Result<(u64, u64, u64, String), Error> {
        let mut grpc = self.grpc.clone();
        let mut req = self.request(proto::SnapshotRequest {});
        // Writing a large store takes longer than a usual call.
        let deadline = self.config.timeout.max(Duration::from_secs(600));
        req.set_timeout(deadline);
        let r = tokio::time::timeout(deadline, grpc.snapshot(req))
            .await
            .map_err(|_| Error::Timeout(deadline))?
            .map_err(|s| Error::from_status(s, deadline))?
            .into_inner();
        Ok((r.objects, r.revision, r.bytes, r.path))
    }

    /// Changes under `prefix` from revision `from` (0: from now), in revision order. Opening
    /// the stream is bounded by the timeout (and not retried); the stream itself has no
    /// deadline.
    ///
    /// # Errors
    ///
    /// See [`Error`]; a watch that falls behind ends with [`Error::OutOfRange`] carrying
    /// `resume_from`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a watch not yet open is dropped; dropping the stream ends the watch.
    pub async fn watch(
        &self,
        prefix: &[u8],
        from: u64,
        values: bool,
    ) -> Result<impl Stream<Item = Result<Change, Error>> + use<>, Error> {
        let mut grpc = self.grpc.clone();
        // No `grpc-timeout`: a watch lives as long as its caller keeps the stream. Under a
        // shadow context it watches the shadow namespace, like every other call.
        let req = self.untimed_request(proto::WatchRequest {
            prefix: Bytes::copy_from_slice(prefix),
            start_revision: from,
            include_values: values,
        });
        let timeout = self.config.timeout;
        let stream = self.bounded(grpc.watch(req)).await?.into_inner();
        use tokio_stream::StreamExt;
        Ok(stream.map(move |e| {
            let e = e.map_err(|s| Error::from_status(s, timeout))?;
            let kind = match proto::EventType::try_from(e.r#type) {
                Ok(proto::EventType::Put) => "put",
                Ok(proto::EventType::Delete) => "delete",
                Ok(proto::EventType::Expire) => "expire",
                Ok(proto::EventType::Evict) => "evict",
                _ => "unknown",
            };
            Ok(Change {
                revision: e.revision,
                key: e.key,
                kind,
                object: e.meta.map(|m| Object {
                    value: e.value,
                    info: m.into(),
                }),
            })
        }))
    }
}

/// The request of a write; `value` is empty for an upload's header.
fn put_request(key: &[u8], value: Bytes, options: PutOptions) -> proto::PutRequest {
    proto::PutRequest {
        key: Bytes::copy_from_slice(key),
        condition: options.condition(),
        value,
        content_type: options.content_type.unwrap_or_default(),
        metadata: options.metadata,
        ttl_ms: options.ttl.map_or(0, |t| t.as_millis().max(1) as u64),
    }
}
