//! The Rust client: our own types (not raw protobuf), a deadline on every call, and retries
//! with backoff for calls that are safe to repeat (reads).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto;
use crate::proto::object_store_client::ObjectStoreClient;

/// Objects larger than this are uploaded in chunks.
pub const STREAM_THRESHOLD: usize = 4 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Client errors, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist.
    #[error("not found")]
    NotFound,
    /// A condition failed; the key's current revision, if it exists.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The store is full.
    #[error("store full: {0}")]
    Exhausted(String),
    /// The request was invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached (after retries, for reads).
    #[error("objstore unavailable: {0}")]
    Unavailable(String),
    /// Authentication failed or shadow traffic refused.
    #[error("refused: {0}")]
    Refused(String),
    /// A watch fell behind or started outside the kept history: resume from `resume_from`.
    #[error("watch out of range: {message}")]
    OutOfRange {
        /// The server's message.
        message: String,
        /// Where to resume, if the server said.
        resume_from: Option<u64>,
    },
    /// Any other status.
    #[error("objstore error {code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
}

impl Error {
    fn from_status(s: Status, timeout: Duration) -> Error {
        let message = s.message().to_owned();
        match s.code() {
            Code::NotFound => Error::NotFound,
            Code::FailedPrecondition => Error::Precondition(message),
            Code::ResourceExhausted => Error::Exhausted(message),
            Code::InvalidArgument => Error::Invalid(message),
            Code::DeadlineExceeded => Error::Timeout(timeout),
            Code::Unavailable => Error::Unavailable(message),
            Code::Unauthenticated | Code::PermissionDenied => Error::Refused(message),
            Code::OutOfRange => Error::OutOfRange {
                resume_from: message
                    .rsplit("resume-from=")
                    .next()
                    .and_then(|v| v.trim().parse().ok()),
                message,
            },
            code => Error::Other { code, message },
        }
    }
}

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

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Time to live.
    pub ttl: Option<Duration>,
    /// MIME type.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
    /// Only if absent.
    pub if_absent: bool,
    /// Only if the current mod revision is this.
    pub if_revision: Option<u64>,
    /// Only if the current ETag is this.
    pub if_etag: Option<String>,
}

impl PutOptions {
    fn condition(&self) -> Option<proto::Condition> {
        use proto::condition::Kind;
        let kind = if self.if_absent {
            Some(Kind::IfAbsent(true))
        } else if let Some(r) = self.if_revision {
            Some(Kind::IfRevision(r))
        } else {
            self.if_etag.clone().map(Kind::IfEtag)
        };
        kind.map(|k| proto::Condition { kind: Some(k) })
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

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of one call.
    pub timeout: Duration,
    /// Attempts for reads (1: no retry).
    pub read_attempts: u32,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
    /// TLS: the CA that signed the server's certificate. Used for `https://` addresses (and
    /// makes a bare `host:port` one).
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

/// The endpoint for `addr`: `http://` unless TLS is configured or the address says `https://`.
fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint, Error> {
    let err = |message: String| Error::Connect {
        addr: addr.to_owned(),
        message,
    };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else if config.tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| err(e.to_string()))?
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
        endpoint = endpoint.tls_config(t).map_err(|e| err(e.to_string()))?;
    }
    Ok(endpoint)
}

/// A handle to one objstore server. Cheap to clone.
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
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, Error> {
        let connect_err = |message: String| Error::Connect {
            addr: addr.to_owned(),
            message,
        };
        let endpoint = endpoint(addr, &config)?;
        let channel = endpoint.connect().await.map_err(|e| {
            connect_err(format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))
        })?;
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
    pub async fn probe_shadow(&self, key: &[u8]) -> Result<bool, Error> {
        let ctx = jupiter_core::shadow::ShadowContext::new();
        let req = jupiter_core::shadow::ShadowContext::sync_scope(Some(ctx), || {
            self.request(proto::HeadRequest {
                key: Bytes::copy_from_slice(key),
            })
        });
        let acked =
            |m: &tonic::metadata::MetadataMap| m.get(jupiter_core::shadow::ACK_HEADER).is_some();
        match self.grpc.clone().head(req).await {
            Ok(r) => Ok(acked(r.metadata())),
            Err(s) if s.code() == Code::NotFound => Ok(acked(s.metadata())),
            Err(s) => Err(self.err(s)),
        }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.config.timeout);
        if let Some(t) = &self.config.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
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

    fn err(&self, s: Status) -> Error {
        Error::from_status(s, self.config.timeout)
    }

    /// Runs a read with retries on UNAVAILABLE (jittered exponential backoff).
    async fn read<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(ObjectStoreClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            match call(self.grpc.clone()).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == Code::Unavailable && attempt < self.config.read_attempts => {
                    attempt += 1;
                    let jitter = fastrand::u64(..=delay.as_millis() as u64);
                    tokio::time::sleep(delay / 2 + Duration::from_millis(jitter / 2)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(s) => return Err(self.err(s)),
            }
        }
    }

    /// Writes `value` under `key`. Large values are uploaded in chunks.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn put(&self, key: &[u8], value: Bytes, options: PutOptions) -> Result<Info, Error> {
        let put = proto::PutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::new(),
            content_type: options.content_type.clone().unwrap_or_default(),
            metadata: options.metadata.clone(),
            ttl_ms: options.ttl.map_or(0, |t| t.as_millis().max(1) as u64),
            condition: options.condition(),
        };
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
            grpc.upload(self.request(stream)).await
        } else {
            grpc.put(self.request(proto::PutRequest { value, ..put }))
                .await
        };
        let r = reply.map_err(|s| self.err(s))?.into_inner();
        Ok(r.meta.unwrap_or_default().into())
    }

    /// The object under `key`, or `None`.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<Object>, Error> {
        let key = Bytes::copy_from_slice(key);
        let r = self
            .read(|mut g| {
                let req = self.request(proto::GetRequest { key: key.clone() });
                async move { g.get(req).await }
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

    /// The metadata of `key`, or `None`.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn head(&self, key: &[u8]) -> Result<Option<Info>, Error> {
        let key = Bytes::copy_from_slice(key);
        match self
            .read(|mut g| {
                let req = self.request(proto::HeadRequest { key: key.clone() });
                async move { g.head(req).await }
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().meta.map(Info::from)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; returns the deletion's revision, `None` if it did not exist.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn delete(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        let mut grpc = self.grpc.clone();
        match grpc
            .delete(self.request(proto::DeleteRequest {
                key: Bytes::copy_from_slice(key),
                condition: None,
            }))
            .await
        {
            Ok(r) => Ok(Some(r.into_inner().revision)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.err(s)),
        }
    }

    /// One page of keys under `prefix`: `(key, info)` pairs and the token of the next page.
    ///
    /// # Errors
    ///
    /// See [`Error`].
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
                async move { g.list(req).await }
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

    /// Asks the server to write a snapshot now: `(objects, revision, bytes, path)`.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub async fn snapshot(&self) -> Result<(u64, u64, u64, String), Error> {
        let mut grpc = self.grpc.clone();
        let mut req = self.request(proto::SnapshotRequest {});
        // Writing a large store takes longer than a usual call.
        req.set_timeout(self.config.timeout.max(Duration::from_secs(600)));
        let r = grpc
            .snapshot(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok((r.objects, r.revision, r.bytes, r.path))
    }

    /// Changes under `prefix` from revision `from` (0: from now).
    ///
    /// # Errors
    ///
    /// See [`Error`]; a watch that falls behind ends with [`Error::OutOfRange`] carrying
    /// `resume_from`.
    pub async fn watch(
        &self,
        prefix: &[u8],
        from: u64,
        values: bool,
    ) -> Result<impl Stream<Item = Result<Change, Error>> + use<>, Error> {
        let mut grpc = self.grpc.clone();
        let mut req = Request::new(proto::WatchRequest {
            prefix: Bytes::copy_from_slice(prefix),
            start_revision: from,
            include_values: values,
        });
        if let Some(t) = &self.config.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        let timeout = self.config.timeout;
        let stream = grpc
            .watch(req)
            .await
            .map_err(|s| Error::from_status(s, timeout))?
            .into_inner();
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
