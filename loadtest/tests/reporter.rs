//! The library prints nothing: what a run has to say while it goes on reaches the reporter
//! that the caller installs.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Behavior, Server};
use loadtest::stats::Point;

#[derive(Default)]
struct Recording {
    metrics_at: Mutex<Vec<SocketAddr>>,
    progress: Mutex<Vec<u64>>,
    finished: Mutex<usize>,
}

impl loadtest::Reporter for Recording {
    fn serving_metrics(&self, addr: SocketAddr) {
        self.metrics_at.lock().unwrap().push(addr);
    }

    fn progress(&self, point: &Point, _elapsed: Duration) {
        self.progress.lock().unwrap().push(point.requests);
    }

    fn finished(&self) {
        *self.finished.lock().unwrap() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_hears_the_metrics_address_and_the_end() {
    let server = Server::start(Behavior::Fast, true);
    let text = format!(
        r#"
        [output]
        prometheus = "127.0.0.1:0"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "s"
        executor = "constant-vus"
        vus = 2
        iterations = 20
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    );
    let recording = Arc::new(Recording::default());
    let (report, outcome) = common::run_reporting(&text, recording.clone()).await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert_eq!(report.total.requests, 20);
    let at = recording.metrics_at.lock().unwrap().clone();
    assert_eq!(at.len(), 1, "{at:?}");
    assert_ne!(at[0].port(), 0, "the bound port, not the one asked for");
    assert_eq!(*recording.finished.lock().unwrap(), 1);
    // Progress comes once a second; a run this short may end before the first.
    let progress = recording.progress.lock().unwrap();
    assert!(progress.iter().sum::<u64>() <= 20, "{progress:?}");
}
