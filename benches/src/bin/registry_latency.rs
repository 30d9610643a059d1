//! Registry propagation latency: time from a register or deregister to a watcher (another
//! client) seeing the new instance set, over real etcd on loopback.
//!
//! `cargo run -p benches --release --bin registry-latency -- [changes]` (default 1000).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jupiter_core::registry::{
    EtcdRegistry, LocalRegistry, Registry, RegistryConfig, RegistryKind, ServiceInfo, Target,
};

fn main() -> ExitCode {
    let changes: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) if n >= 2 => n,
        _ => {
            eprintln!("usage: registry-latency [changes >= 2]");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let etcd = testkit::Etcd::start();
    rt.block_on(async {
        let config = RegistryConfig {
            kind: RegistryKind::Etcd,
            endpoints: vec![etcd.endpoint()],
            ..Default::default()
        };
        let writer: Arc<dyn Registry> =
            Arc::new(EtcdRegistry::connect(config.clone()).await.expect("etcd"));
        let watcher: Arc<dyn Registry> =
            Arc::new(EtcdRegistry::connect(config).await.expect("etcd"));
        report(
            "etcd (separate writer and watcher clients)",
            &measure(writer, watcher, changes).await,
        );
        let local: Arc<dyn Registry> = Arc::new(LocalRegistry::new());
        report("in-process", &measure(local.clone(), local, changes).await);
    });
    ExitCode::SUCCESS
}

/// Alternates register and deregister; each change is timed until the watcher's set shows it.
async fn measure(
    writer: Arc<dyn Registry>,
    watcher: Arc<dyn Registry>,
    changes: usize,
) -> Vec<Duration> {
    let target = Target::new("grpc", "bench", "bench");
    let mut rx = watcher.discover(target).await.expect("discover");
    let mut samples = Vec::with_capacity(changes);
    let mut held = None;
    for i in 0..changes {
        let start = Instant::now();
        let want_present = held.is_none();
        match held.take() {
            None => {
                let info = ServiceInfo::new("bench", "grpc", format!("127.0.0.1:{}", 10_000 + i))
                    .mode("bench");
                held = Some(writer.register(info).await.expect("register"));
            }
            Some(reg) => reg.deregister().await.expect("deregister"),
        }
        loop {
            if rx.borrow_and_update().is_empty() != want_present {
                break;
            }
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("watcher saw the change")
                .expect("watch alive");
        }
        samples.push(start.elapsed());
    }
    samples
}

fn report(what: &str, samples: &[Duration]) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let q = |p: f64| s[((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1];
    println!(
        "{what}: {} changes, register/deregister -> watcher sees it: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.len(),
        ms(q(0.50)),
        ms(q(0.90)),
        ms(q(0.99)),
        ms(*s.last().unwrap())
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
