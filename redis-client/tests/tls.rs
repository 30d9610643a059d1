//! TLS (feature `tls`) against a real redis-server with its TLS port, certificates made by a
//! throwaway CA; the server verifies client certificates (`tls-auth-clients yes`).

mod common;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use redis_client::{Client, ClientConfig, Error, Protocol, TlsOptions, cmd};
use testkit::RedisServer;

struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Writes `<name>-ca.pem`, and a certificate and key signed by it for each of `leaves`.
fn issue(dir: &Path, name: &str, leaves: &[(&str, Vec<String>)]) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer equals its subject looks self-signed to OpenSSL.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    for (leaf, sans) in leaves {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, *leaf);
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{leaf}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{leaf}.key")), key.serialize_pem()).unwrap();
    }
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "jupiter-redis-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    issue(
        &dir,
        "good",
        &[
            ("server", vec!["localhost".into(), "127.0.0.1".into()]),
            ("client", vec!["app".into()]),
        ],
    );
    issue(&dir, "other", &[("stranger", vec!["app".into()])]);
    Pki { dir }
}

/// The server's side of TLS, as config directives: its certificate and key, and the CA that
/// must have signed its clients' certificates.
fn server_tls(pki: &Pki) -> [(&'static str, String); 4] {
    let s = |name: &str| pki.path(name).to_string_lossy().into_owned();
    [
        ("tls-cert-file", s("server.pem")),
        ("tls-key-file", s("server.key")),
        ("tls-ca-cert-file", s("good-ca.pem")),
        ("tls-auth-clients", "yes".into()),
    ]
}

fn tls_server(pki: &Pki) -> (RedisServer, u16) {
    let port = testkit::free_port().unwrap();
    let redis = server_tls(pki)
        .iter()
        .fold(
            RedisServer::builder().config("tls-port", &port.to_string()),
            |b, (k, v)| b.config(k, v),
        )
        .start();
    (redis, port)
}

fn options(pki: &Pki, client: Option<&str>) -> TlsOptions {
    TlsOptions {
        ca_file: Some(pki.path("good-ca.pem")),
        cert_file: client.map(|c| pki.path(&format!("{c}.pem"))),
        key_file: client.map(|c| pki.path(&format!("{c}.key"))),
        server_name: None,
    }
}

async fn connect(url: String, tls: TlsOptions, protocol: Protocol) -> Result<Client, Error> {
    common::connect(ClientConfig {
        url,
        tls: Some(tls),
        protocol,
        connect_timeout: std::time::Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .await
}

/// A refused handshake is a connect error that carries its cause, not a timeout.
fn assert_refused_with_its_cause(e: &Error) {
    assert!(matches!(e, Error::Connect { .. }), "{}", chain(e));
    assert!(
        !chain(e).contains("no reply within"),
        "the cause, not a timeout: {}",
        chain(e)
    );
}

/// What `ClientConfig::validate` says of a configuration with `tls`.
fn invalid(tls: TlsOptions) -> Error {
    ClientConfig {
        tls: Some(tls),
        ..ClientConfig::default()
    }
    .validate()
    .unwrap_err()
}

fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[tokio::test]
async fn tls_with_client_certificates_under_both_protocols() {
    let pki = pki();
    let (redis, port) = tls_server(&pki);
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("rediss://{host}:{port}");
            let c = connect(url, options(&pki, Some("client")), protocol)
                .await
                .unwrap_or_else(|e| {
                    let log = std::fs::read_dir(redis.dir())
                        .unwrap()
                        .filter_map(|f| f.ok())
                        .filter(|f| f.path().extension().is_some_and(|x| x == "log"))
                        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                        .collect::<String>();
                    panic!("{host} {protocol:?}: {}\n{log}", chain(&e))
                });
            c.set("k", "over tls").await.unwrap();
            assert_eq!(c.get::<String>("k").await.unwrap(), "over tls");
            // Pipelining, a large value and pub/sub go through the same stream type.
            let big = vec![7u8; 3 * 1024 * 1024];
            c.set("big", big.as_slice()).await.unwrap();
            assert_eq!(c.get::<Vec<u8>>("big").await.unwrap(), big);
            let mut sub = c.subscriber();
            sub.subscribe(&["ch"]).await.unwrap();
            c.publish("ch", "hello").await.unwrap();
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next_message())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&m.payload[..], b"hello");
            let info: String = c.query(cmd("INFO").arg("server")).await.unwrap();
            assert!(
                info.contains(&format!("tcp_port:{}", redis.port())),
                "{info}"
            );
        }
    }
}

#[tokio::test]
async fn tls_failures_are_clear_errors() {
    let pki = pki();
    let (redis, port) = tls_server(&pki);
    let url = format!("rediss://127.0.0.1:{port}");
    // The server wants a client certificate.
    let e = connect(url.clone(), options(&pki, None), Protocol::Resp2)
        .await
        .unwrap_err();
    assert_refused_with_its_cause(&e);
    // A certificate from a CA the server does not trust.
    let e = connect(
        url.clone(),
        options(&pki, Some("stranger")),
        Protocol::Resp2,
    )
    .await
    .unwrap_err();
    assert_refused_with_its_cause(&e);
    // We do not trust the server's CA.
    let mut wrong_ca = options(&pki, Some("client"));
    wrong_ca.ca_file = Some(pki.path("other-ca.pem"));
    let e = connect(url.clone(), wrong_ca, Protocol::Resp2)
        .await
        .unwrap_err();
    let msg = chain(&e);
    assert!(msg.contains("certificate"), "{msg}");
    // The certificate does not carry the name we ask for.
    let mut wrong_name = options(&pki, Some("client"));
    wrong_name.server_name = Some("redis.example.com".into());
    let msg = chain(&connect(url, wrong_name, Protocol::Resp2).await.unwrap_err());
    assert!(msg.contains("certificate"), "{msg}");
    // Plain text to the plain port still works; TLS to the plain port fails cleanly.
    let plain = common::connect_url(&redis.url()).await.unwrap();
    plain.ping().await.unwrap();
    let e = connect(
        format!("rediss://127.0.0.1:{}", redis.port()),
        options(&pki, Some("client")),
        Protocol::Resp2,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{}", chain(&e));

    // Bad files are configuration errors naming the key and the file.
    let mut missing = options(&pki, Some("client"));
    missing.ca_file = Some(pki.path("nope.pem"));
    let e = invalid(missing);
    assert!(
        e.to_string().contains("tls.ca-file") && e.to_string().contains("nope.pem"),
        "{e}"
    );
    let mut half = options(&pki, None);
    half.cert_file = Some(pki.path("client.pem"));
    let e = invalid(half);
    assert!(e.to_string().contains("tls.key-file"), "{e}");
    let mut not_pem = options(&pki, None);
    not_pem.ca_file = Some(pki.path("client.key"));
    let e = invalid(not_pem);
    assert!(e.to_string().contains("tls.ca-file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_tls_batches_are_flushed() {
    // The driver never called `poll_flush`: rustls keeps what `poll_write` accepted, so a
    // batch's tail could wait for the next request or the timeout. Measured before the fix:
    // rounds of 8 concurrent 4 MiB SETs (command timeout 2 s) failed with "no reply within
    // 2s" for 4-14 of 160 SETs; over plain TCP, none.
    let pki = pki();
    let (_redis, port) = tls_server(&pki);
    let client = common::connect(ClientConfig {
        url: format!("rediss://localhost:{port}"),
        tls: Some(options(&pki, Some("client"))),
        command_timeout: std::time::Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let value = bytes::Bytes::from(vec![b'x'; 4 << 20]);
    let mut failures = Vec::new();
    for round in 0..20 {
        let sets = (0..8).map(|i| client.set(format!("big:{i}"), value.clone()));
        for (i, r) in futures::future::join_all(sets)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r {
                failures.push(format!("round {round} set {i}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 160 failed: {failures:?}",
        failures.len()
    );
    let back: bytes::Bytes = client.get("big:3").await.unwrap();
    assert_eq!(back.len(), 4 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls_routes_every_node_through_its_tls_port() {
    let pki = pki();
    // TLS for clients, for the cluster bus and for replication; the plain ports stay for
    // testkit's own checks.
    let cluster = server_tls(&pki)
        .iter()
        .fold(testkit::RedisCluster::builder().tls_ports(), |b, (k, v)| {
            b.config(k, v)
        })
        .config("tls-cluster", "yes")
        .config("tls-replication", "yes")
        .start();
    let seeds: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("rediss://127.0.0.1:{}?name=tls-app", n.tls_port().unwrap()))
        .collect();
    let mut clients = Vec::new();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let c = common::connect(ClientConfig {
            cluster: true,
            urls: seeds.clone(),
            tls: Some(options(&pki, Some("client"))),
            protocol,
            ..ClientConfig::default()
        })
        .await
        .unwrap_or_else(|e| panic!("cluster over TLS, {protocol:?}: {}", chain(&e)));
        let keys: Vec<String> = (0..64).map(|i| format!("tls:{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            c.set(k, i).await.unwrap();
        }
        let got: Vec<Option<usize>> = c.mget(&keys).await.unwrap();
        assert_eq!(got, (0..64).map(Some).collect::<Vec<_>>(), "{protocol:?}");
        clients.push(c);
    }
    // Every primary served these clients, and only on its TLS port (the map's addresses are the
    // TLS ports, not the plain ones).
    for node in cluster.masters() {
        let list = match node.command(&["CLIENT", "LIST"]).unwrap() {
            testkit::Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
            other => panic!("CLIENT LIST: {other:?}"),
        };
        let ours: Vec<&str> = list
            .lines()
            .filter(|l| l.split(' ').any(|f| f == "name=tls-app"))
            .collect();
        assert!(
            !ours.is_empty(),
            "{}: no connection of the client",
            node.addr()
        );
        let tls = format!("laddr=127.0.0.1:{}", node.tls_port().unwrap());
        for line in ours {
            assert!(line.split(' ').any(|f| f == tls), "{}: {line}", node.addr());
        }
    }
}
