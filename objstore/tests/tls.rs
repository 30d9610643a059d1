//! gRPC over TLS (rustls): the real `objstore serve` with `[objstore.tls]`, a client that
//! trusts the CA works; a client that trusts another CA, or speaks plaintext, is refused.

use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use objstore::client::{Client, ClientConfig, ClientTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA and a server certificate for `localhost` and 127.0.0.1, written into `dir`.
fn pki(dir: &Path, name: &str) -> Vec<u8> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    ca.pem().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_with_the_right_ca_get_in_and_others_do_not() {
    let dir = tempfile_dir();
    let ca = pki(&dir, "server");
    let other_ca = pki(&dir, "other");
    let config = dir.join("objstore.toml");
    std::fs::write(
        &config,
        format!(
            "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\n\
             [objstore.tls]\ncert-file = \"{d}/server.pem\"\nkey-file = \"{d}/server.key\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_objstore"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed on drop, also when an assertion below fails.
    let _server = KillOnDrop(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr = loop {
        let line = lines.next().expect("serve prints its address").unwrap();
        if let Some(a) = line.strip_prefix("objstore listening on grpcs://") {
            break a.to_owned();
        }
    };
    let port = addr.rsplit(':').next().unwrap();
    let tls = |ca: &[u8]| ClientConfig {
        read_attempts: 1,
        tls: Some(ClientTls {
            ca_pem: ca.to_vec(),
            domain: Some("localhost".into()),
        }),
        ..ClientConfig::default()
    };
    let c = Client::connect(&format!("https://localhost:{port}"), tls(&ca))
        .await
        .unwrap();
    c.put(b"k", Bytes::from_static(b"over tls"), Default::default())
        .await
        .unwrap();
    assert_eq!(c.get(b"k").await.unwrap().unwrap().value, "over tls");
    // A bare host:port with TLS settings is https too.
    let c = Client::connect(&addr, tls(&ca)).await.unwrap();
    assert!(c.get(b"k").await.unwrap().is_some());
    // Another CA: the handshake fails.
    let bad = Client::connect(&format!("https://localhost:{port}"), tls(&other_ca)).await;
    let e = match bad {
        Ok(c) => c
            .get(b"k")
            .await
            .expect_err("a client trusting another CA got in"),
        Err(e) => e,
    };
    let chain = error_chain(&e);
    assert!(
        chain.contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    // Plaintext to a TLS port: no answer.
    let plain = ClientConfig {
        read_attempts: 1,
        timeout: std::time::Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let e = match Client::connect(&addr, plain).await {
        Ok(c) => c.get(b"k").await.expect_err("plaintext got an answer"),
        Err(e) => e,
    };
    // HTTP/2 in the clear meets a TLS handshake: the connection fails under the call
    // (tonic reports that as UNKNOWN, INTERNAL or CANCELLED, by where it surfaced), which is
    // "unavailable", not a timeout and not an answer from the store.
    assert!(
        matches!(e, objstore::Error::Unavailable(_)),
        "{e:?}: {}",
        error_chain(&e)
    );
    // An https address without TLS settings is a clear error.
    let e = Client::connect(
        &format!("https://localhost:{port}"),
        ClientConfig::default(),
    )
    .await
    .unwrap_err();
    // The reason is the error's source (kept, not flattened into the message).
    let why = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        matches!(e, objstore::client::Error::Connect { .. })
            && why
                .as_deref()
                .is_some_and(|w| w.contains("needs the client's TLS settings")),
        "{e}: {why:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The error and its sources, as the CLIs print them.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    jupiter_core::cli::render_error("test", e)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn half_a_tls_configuration_is_refused() {
    let dir = tempfile_dir();
    let config = dir.join("objstore.toml");
    std::fs::write(
        &config,
        "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\n\
         [objstore.tls]\ncert-file = \"/nonexistent.pem\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_objstore"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("set both cert-file and key-file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "objstore-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
