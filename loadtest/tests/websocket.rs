//! WebSocket steps against a loopback echo server (tokio-tungstenite): the handshake carries
//! the shadow tag, which the server acknowledges as a Jupiter service would; every text
//! message comes back prefixed with `echo: `.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Sessions whose handshake was tagged as shadow traffic.
    shadow_sessions: AtomicU64,
    untagged_sessions: AtomicU64,
    messages: AtomicU64,
    /// Sessions that ended with the client's close frame.
    closed_cleanly: AtomicU64,
}

/// Serves the echo on a free loopback port; `ack` says whether tagged handshakes are
/// acknowledged. Runs until the test's runtime ends.
async fn serve(ack: bool) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let all = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = all.clone();
            tokio::spawn(async move {
                // The signature tungstenite's handshake callback has.
                #[allow(clippy::result_large_err)]
                let tagged =
                    |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                        let shadow = req.headers().contains_key(jupiter_core::shadow::HEADER);
                        let counter = if shadow {
                            &seen.shadow_sessions
                        } else {
                            &seen.untagged_sessions
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if shadow && ack {
                            resp.headers_mut().insert(
                                jupiter_core::shadow::ACK_HEADER,
                                http::HeaderValue::from_static("on"),
                            );
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, tagged).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Text(t) => {
                            seen.messages.fetch_add(1, Ordering::Relaxed);
                            let reply = format!("echo: {}", t.as_str());
                            if ws.send(Message::text(reply)).await.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => {
                            seen.closed_cleanly.fetch_add(1, Ordering::Relaxed);
                            let _ = ws.close(None).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn scenario(addr: SocketAddr, live: bool, second: &str) -> String {
    format!(
        r#"
        [targets.chat]
        kind = "websocket"
        url = "ws://{addr}"
        live = {live}
        [[scenarios]]
        name = "chat"
        executor = "constant-vus"
        vus = 3
        iterations = 30
        flow = "sequence"
        [[scenarios.steps]]
        name = "hello"
        websocket = {{ path = "/chat", send = ['{{"n": {{{{seq}}}}, "who": "vu{{{{vu}}}}"}}', "second"] }}
        checks = {{ body-contains = "echo: second" }}
        extract = {{ n = {{ regex = 'echo: \{{"n": (\d+)' }} }}
        [[scenarios.steps]]
        name = "again"
        websocket = {{ path = "/chat", send = ["{second}"] }}
        checks = {{ body-contains = "echo: n=" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_send_receive_check_extract_and_close() {
    let (addr, seen) = serve(true).await;
    let (report, outcome) = common::run(&scenario(addr, true, "n={{var.n}}")).await;
    let s = &report.scenarios[0];
    for step in &s.steps {
        assert_eq!(step.requests, 30, "{}", step.name);
        assert_eq!(step.failed, 0, "{}: {:?}", step.name, step.errors);
    }
    assert_eq!(outcome, loadtest::Outcome::Passed);
    // 60 sessions and the probe's, all tagged; 3 messages an iteration, all echoed.
    assert_eq!(seen.shadow_sessions.load(Ordering::Relaxed), 61);
    assert_eq!(seen.untagged_sessions.load(Ordering::Relaxed), 0);
    assert_eq!(seen.messages.load(Ordering::Relaxed), 90);
    // Every session, the probe's too, ended with the closing handshake: the client waits for
    // the server's close, which the server sends after counting.
    assert_eq!(seen.closed_cleanly.load(Ordering::Relaxed), 61);

    // A check that does not hold fails every such step, and the run says so.
    let (report, _) = common::run(&scenario(addr, true, "other")).await;
    let again = &report.scenarios[0].steps[1];
    assert_eq!(again.failed, 30);
    assert_eq!(again.errors["check"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_websocket_target_must_acknowledge_the_shadow_tag() {
    let (addr, seen) = serve(false).await;
    let err = common::refused(&scenario(addr, true, "x")).await;
    let msg = err.to_string();
    assert!(
        msg.contains("chat") && msg.contains(jupiter_core::shadow::ACK_HEADER),
        "{msg}"
    );
    assert_eq!(
        seen.shadow_sessions.load(Ordering::Relaxed),
        1,
        "the probe only"
    );
    assert_eq!(seen.messages.load(Ordering::Relaxed), 0);

    // Not live: no probe, and the run goes ahead.
    let (report, _) = common::run(&scenario(addr, false, "n={{var.n}}")).await;
    assert_eq!(report.scenarios[0].steps[1].failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_is_a_connect_error() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (report, _) = common::run(&scenario(addr, false, "x")).await;
    let hello = &report.scenarios[0].steps[0];
    assert_eq!(hello.failed, 30);
    assert_eq!(hello.errors["connect"], 30, "{:?}", hello.errors);
}
