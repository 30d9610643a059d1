//! WebSocket: a step is one session — connect (the handshake carries the shadow tag), send
//! each message, wait for the messages it expects, close.
//!
//! The step's time is the whole session's. What it received, joined by newlines, is what its
//! `body-contains` check and its `json`/`regex` extractions read; `header` extractions and
//! `headers` checks read the handshake's answer.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jupiter_core::BoxError;
use jupiter_core::shadow::ShadowContext;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Call, Protocol, Scratch};
use crate::error::Problem;
use crate::http1::Endpoint;
use crate::scenario::{Action, RunSection, Target};
use crate::stats::ErrorKind;
use crate::tls::{Stream, Tls};

/// Largest message taken from a server (a larger one is a protocol error).
const MAX_MESSAGE: usize = 16 << 20;

/// A WebSocket target.
#[derive(Debug)]
pub(crate) struct Websocket {
    endpoint: Endpoint,
    /// `ws` or `wss`.
    scheme: &'static str,
    tls: Option<Tls>,
    addr: SocketAddr,
    timeout: Duration,
}

/// A session's handshake answer and what it received.
struct Session {
    headers: http::HeaderMap,
    received: Vec<u8>,
}

impl Protocol for Websocket {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let url = target.spec.url.as_deref().unwrap_or_default();
        let endpoint = Endpoint::parse(&url.replacen("ws", "http", 1))?;
        let tls = endpoint
            .tls
            .then(|| Tls::new(&target.spec.tls, &endpoint.host, b"http/1.1"))
            .transpose()?;
        let addr = endpoint.resolve().await?;
        Ok(Websocket {
            scheme: if endpoint.tls { "wss" } else { "ws" },
            endpoint,
            tls,
            addr,
            timeout: run.timeout,
        })
    }

    async fn probe(&self, target: &Target, context: &ShadowContext) -> Result<(), Problem> {
        let headers = super::header_lines(context);
        let session = self
            .session(&target.spec.probe, &headers, &[], 0)
            .await
            .map_err(|e| Problem::caused_by("did not answer the probe", e))?;
        super::http_probe_acked(
            session
                .headers
                .get(jupiter_core::shadow::ACK_HEADER)
                .map(|v| v.as_bytes()),
            &target.spec.probe,
        )
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, shadow } = call;
        let Action::Websocket {
            path,
            send,
            receive,
        } = &step.action
        else {
            return Some(ErrorKind::Protocol);
        };
        s.path.clear();
        path.render(vars, &mut s.path);
        let Ok(path) = std::str::from_utf8(&s.path) else {
            return Some(ErrorKind::Check);
        };
        let messages: Vec<Vec<u8>> = send.iter().map(|t| t.render_vec(vars)).collect();
        let session = match self
            .session(path, &shadow.headers, &messages, *receive)
            .await
        {
            Ok(session) => session,
            Err(e) => return Some(e.kind()),
        };
        let headers = || {
            session
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
        };
        // The handshake's status is 101 when we get here: the checks are on the messages.
        if let Some(e) = super::check_body(step, &session.received) {
            return Some(e);
        }
        for (name, want) in &step.checks.headers {
            if !headers().any(|(k, v)| k.eq_ignore_ascii_case(name) && v == want.as_bytes()) {
                return Some(ErrorKind::Check);
            }
        }
        for e in &step.extract {
            let Some(value) = crate::scenario::extract(&e.how, headers, &session.received) else {
                return Some(ErrorKind::Check);
            };
            s.extracted.push((e.var.clone(), value));
        }
        None
    }
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer in time")]
    Timeout,
    #[error("the handshake was refused: HTTP {0}")]
    Refused(u16),
    #[error("{0}")]
    Protocol(WsError),
    #[error("the server closed the session before the messages expected")]
    Closed,
}

impl SessionError {
    fn kind(&self) -> ErrorKind {
        match self {
            SessionError::Connect(_) => ErrorKind::Connect,
            SessionError::Timeout => ErrorKind::Timeout,
            SessionError::Refused(_) => ErrorKind::Status,
            SessionError::Protocol(_) | SessionError::Closed => ErrorKind::Protocol,
        }
    }
}

impl Websocket {
    /// One session within the run's timeout: the handshake to `path` with `headers`, each of
    /// `messages` sent as text, `receive` messages awaited, then the closing handshake.
    async fn session(
        &self,
        path: &str,
        headers: &[(String, Vec<u8>)],
        messages: &[Vec<u8>],
        receive: u32,
    ) -> Result<Session, SessionError> {
        let session = async {
            let url = format!("{}://{}{path}", self.scheme, self.endpoint.authority);
            let mut request = url.into_client_request().map_err(SessionError::Protocol)?;
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_bytes(v),
                ) {
                    request.headers_mut().insert(k, v);
                }
            }
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(SessionError::Connect)?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                Some(tls) => tls.connect(tcp).await.map_err(SessionError::Connect)?,
                None => Stream::Plain(tcp),
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE));
            let (mut ws, answer) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| match e {
                        WsError::Http(r) => SessionError::Refused(r.status().as_u16()),
                        e => SessionError::Protocol(e),
                    })?;
            for m in messages {
                let text = String::from_utf8_lossy(m).into_owned();
                ws.send(Message::text(text))
                    .await
                    .map_err(SessionError::Protocol)?;
            }
            let mut received = Vec::new();
            for i in 0..receive {
                let data = loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(b))) => break b.to_vec(),
                        // Pings are answered by the library; pongs and frames carry nothing here.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(_))) | None => return Err(SessionError::Closed),
                        Some(Err(e)) => return Err(SessionError::Protocol(e)),
                    }
                };
                if i > 0 {
                    received.push(b'\n');
                }
                received.extend_from_slice(&data);
            }
            // The closing handshake: sent, then the server's close awaited (or the end).
            let _ = ws.close(None).await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
            Ok(Session {
                headers: answer.headers().clone(),
                received,
            })
        };
        tokio::time::timeout(self.timeout, session)
            .await
            .unwrap_or(Err(SessionError::Timeout))
    }
}
