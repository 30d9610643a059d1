//! Helpers shared by objstore's integration tests: the real `objstore serve` process.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `objstore serve` running with a configuration file of its own; killed on drop.
pub struct Served {
    pub child: Child,
    /// The gRPC address it printed.
    pub addr: String,
    /// What it prints after that, line by line.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// Where its configuration file is; removed on drop.
    dir: std::path::PathBuf,
}

impl Served {
    /// The rest of the next line it prints that starts with `prefix` (an address).
    pub fn printed(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("objstore serve never printed {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty directory for one test (removed by the tests that care).
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "objstore-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `objstore serve` on free loopback ports (gRPC and governance) with `extra_config`
/// appended to `[objstore]`, in a scratch directory named after `tag`, and waits for its
/// address. Its stderr goes to `stderr` (a pipe only where the test reads it to the end).
pub fn serve(tag: &str, extra_config: &str, stderr: Stdio) -> Served {
    let dir = scratch_dir(tag);
    let file = dir.join("objstore.toml");
    std::fs::write(
        &file,
        format!(
            "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\n{extra_config}"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_objstore"))
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the objstore binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut served = Served {
        child,
        addr: String::new(),
        lines: rx,
        dir,
    };
    served.addr = served.printed("objstore listening on grpc://");
    served
}
