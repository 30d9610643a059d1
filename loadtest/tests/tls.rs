//! HTTPS targets, HTTP/1.1 and HTTP/2 (ALPN `h2`), against a real rustls server on loopback
//! whose certificate a throwaway CA signed: trusted through `tls.ca-file`, taken blindly with
//! `tls.insecure`, refused by default (not a public root), and the scenario keys checked.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{issue, loadtest, text};
use http_body_util::Full;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Requests the server answered, by protocol version, and the cookies sent to `/items`.
#[derive(Default)]
struct Seen {
    http1: AtomicU64,
    http2: AtomicU64,
    item_cookies: std::sync::Mutex<Vec<Option<String>>>,
}

/// An HTTPS server on its own thread: HTTP/2 when ALPN picks `h2`, else HTTP/1.1; answers
/// 200 and acknowledges shadow traffic.
/// The server's TLS settings: the certificate `issue` made, ALPN `h2` then `http/1.1`.
fn acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn serve(dir: &Path) -> (std::net::SocketAddr, Arc<Seen>) {
    let acceptor = acceptor(dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counts) = (acceptor.clone(), counts.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let counts = counts.clone();
                        async move {
                            let n = if req.version() == http::Version::HTTP_2 {
                                &counts.http2
                            } else {
                                &counts.http1
                            };
                            n.fetch_add(1, Ordering::Relaxed);
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from_static(b"ok")));
                            match req.uri().path() {
                                "/login" => {
                                    resp.headers_mut().insert(
                                        http::header::SET_COOKIE,
                                        http::HeaderValue::from_static("sid=h2; Path=/; Secure"),
                                    );
                                }
                                "/items" => {
                                    let cookie = req
                                        .headers()
                                        .get(http::header::COOKIE)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned);
                                    counts.item_cookies.lock().unwrap().push(cookie);
                                }
                                _ => {}
                            }
                            if req.headers().contains_key(jupiter_core::shadow::HEADER) {
                                resp.headers_mut().insert(
                                    jupiter_core::shadow::ACK_HEADER,
                                    http::HeaderValue::from_static("1"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
    });
    (addr, seen)
}

/// Writes a 20-iteration scenario against `url` with `target_extra` in the target table;
/// returns its path.
fn scenario(dir: &Path, name: &str, url: &str, target_extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[targets.api]\nkind = \"http\"\nurl = \"{url}\"\n{target_extra}\n\
             [[scenarios]]\nname = \"s\"\nexecutor = \"shared-iterations\"\nvus = 2\n\
             iterations = 20\nmax-duration = \"30s\"\n[[scenarios.steps]]\nname = \"get\"\n\
             http = {{ path = \"/t\" }}\n"
        ),
    )
    .unwrap();
    path
}

/// Runs the scenario `name` against `url` (with `extra` in the target): it must pass, with
/// all 20 requests answered and none failed.
fn passes_all_20(dir: &Path, name: &str, url: &str, extra: &str) {
    let path = scenario(dir, name, url, extra);
    let json = dir.join(format!("{name}.json"));
    let o = loadtest(&[
        "run",
        "-q",
        path.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let total = (&r["total"]["requests"], &r["total"]["failed"]);
    assert_eq!(
        (total.0.as_u64(), total.1.as_u64()),
        (Some(20), Some(0)),
        "{name}"
    );
}

#[test]
fn https_targets_speak_http1_and_http2_and_check_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    let (addr, seen) = serve(dir.path());
    let url = format!("https://localhost:{}", addr.port());

    // Trusted through the scenario's CA file (relative to the scenario), HTTP/1.1 then HTTP/2.
    for (name, extra, seen_by) in [
        ("h1", "tls = { ca-file = \"ca.pem\" }", &seen.http1),
        (
            "h2",
            "http2 = true\ntls = { ca-file = \"ca.pem\" }",
            &seen.http2,
        ),
    ] {
        let before = seen_by.load(Ordering::Relaxed);
        passes_all_20(dir.path(), name, &url, extra);
        assert_eq!(
            seen_by.load(Ordering::Relaxed) - before,
            21,
            "{name}: the probe and 20 requests, in that protocol"
        );
    }

    // Without the CA: the certificate is not a public root's, the probe fails (exit 3), and
    // nothing reached the server.
    let before = seen.http1.load(Ordering::Relaxed);
    let path = scenario(dir.path(), "untrusted", &url, "");
    let o = loadtest(&["run", "-q", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("api"), "names the target: {}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("certificate"),
        "says why: {}",
        text(&o)
    );
    assert_eq!(seen.http1.load(Ordering::Relaxed), before);

    // Over HTTP/2 too, a cookie set by the login step goes back on the later step of the
    // same iteration (and the next iteration starts with an empty jar, logging in again).
    let path = dir.path().join("cookies.toml");
    std::fs::write(
        &path,
        format!(
            "[targets.api]\nkind = \"http\"\nurl = \"{url}\"\nhttp2 = true\n\
             tls = {{ ca-file = \"ca.pem\" }}\n[[scenarios]]\nname = \"s\"\n\
             executor = \"constant-vus\"\nvus = 1\niterations = 3\nflow = \"sequence\"\n\
             [[scenarios.steps]]\nname = \"login\"\nhttp = {{ path = \"/login\" }}\n\
             [[scenarios.steps]]\nname = \"items\"\nhttp = {{ path = \"/items\" }}\n"
        ),
    )
    .unwrap();
    let o = loadtest(&["run", "-q", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        *seen.item_cookies.lock().unwrap(),
        vec![Some("sid=h2".to_owned()); 3],
        "each iteration's /items carried the cookie its /login set, over HTTP/2"
    );

    // insecure = true takes it (a staging server's own certificate).
    passes_all_20(dir.path(), "insecure", &url, "tls = { insecure = true }");
}

#[test]
fn tls_settings_are_checked_when_the_scenario_loads() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    for (url, extra, want) in [
        (
            "http://127.0.0.1:1",
            "tls = { insecure = true }",
            "targets.api.tls: only for an http target with an https:// url",
        ),
        (
            "https://127.0.0.1:1",
            "tls = { ca-file = \"ca.pem\", insecure = true }",
            "targets.api.tls.insecure: either ca-file or insecure = true, not both",
        ),
        (
            "https://127.0.0.1:1",
            "tls = { ca-file = \"missing.pem\" }",
            "targets.api.tls.ca-file:",
        ),
        (
            "https://127.0.0.1:1",
            "tls = { ca-file = \"empty.pem\" }",
            "holds no PEM certificate",
        ),
        (
            "https://127.0.0.1:1",
            "tls = { ca-fil = \"ca.pem\" }",
            "ca-fil",
        ),
    ] {
        let path = scenario(dir.path(), "bad", url, extra);
        let o = loadtest(&["validate", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", text(&o));
        assert!(text(&o).contains(want), "{extra}: {want} in {}", text(&o));
        assert!(
            text(&o).contains("bad.toml"),
            "names the file: {}",
            text(&o)
        );
    }
    let path = scenario(
        dir.path(),
        "good",
        "https://localhost:8443",
        "tls = { ca-file = \"ca.pem\" }",
    );
    let o = loadtest(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A WebSocket echo over TLS: `wss://` targets check the certificate like `https://` ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_targets_check_the_certificate() {
    use futures::{SinkExt, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    let acceptor = acceptor(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echoed = Arc::new(AtomicU64::new(0));
    let counter = echoed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The signature tungstenite's handshake callback has.
                #[allow(clippy::result_large_err)]
                let ack = |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                           mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    resp.headers_mut().insert(
                        jupiter_core::shadow::ACK_HEADER,
                        http::HeaderValue::from_static("on"),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, ack).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        counter.fetch_add(1, Ordering::Relaxed);
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    } else if m.is_close() {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            });
        }
    });
    let scenario = |tls: &str| {
        let path = dir.path().join("wss.toml");
        std::fs::write(
            &path,
            format!(
                r#"
                [targets.chat]
                kind = "websocket"
                url = "wss://localhost:{port}"
                {tls}
                [[scenarios]]
                name = "s"
                executor = "constant-vus"
                vus = 2
                iterations = 20
                [[scenarios.steps]]
                name = "say"
                websocket = {{ send = ["hi {{{{seq}}}}"] }}
                checks = {{ body-contains = "hi " }}
                "#,
                port = addr.port()
            ),
        )
        .unwrap();
        path
    };
    let path = scenario(r#"tls = { ca-file = "ca.pem" }"#);
    let (report, _) = common::run_file(&path, Default::default()).await.unwrap();
    let say = &report.scenarios[0].steps[0];
    assert_eq!((say.requests, say.failed), (20, 0), "{:?}", say.errors);
    assert_eq!(echoed.load(Ordering::Relaxed), 20);

    // Without the CA: not a public root, so the probe's handshake fails and nothing is sent.
    let err = common::run_file(&scenario(""), Default::default())
        .await
        .unwrap_err();
    let msg = common::chain(&err);
    assert!(msg.contains("chat") && msg.contains("certificate"), "{msg}");
    assert_eq!(echoed.load(Ordering::Relaxed), 20);
}
