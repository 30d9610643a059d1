//! Our own binaries as real processes ([`Service`]), found in the workspace's target directory
//! ([`workspace_bin`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::{die_with_parent, spawn};

/// A binary of this workspace (`objstore`, `loadtest`, `shop`, …), from the target directory
/// the running test was built into.
///
/// `cargo test --workspace` builds every package's binaries before any test runs; a test run
/// for one package (`cargo test -p shop`) may not have built another's.
///
/// # Errors
///
/// [`Error::MissingBinary`] when it is not there, naming the `cargo build` that makes it.
pub fn workspace_bin(name: &str) -> Result<PathBuf, Error> {
    // Test binaries live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| Error::Protocol(format!("no target directory above {}", exe.display())))?;
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            binary: format!(
                "{} (build it: cargo build --bin {name}; `cargo test --workspace` builds it)",
                path.display()
            ),
        })
    }
}

/// Output lines of a child, as they arrive.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, usize)>,
    more: Condvar,
}

/// A process of ours (a service, a worker) started by a test, its stdout and stderr collected
/// line by line; killed on drop, and with the test process (`PR_SET_PDEATHSIG`).
pub struct Service {
    name: String,
    child: Mutex<Option<Child>>,
    output: Arc<Lines>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Service {
    /// Starts `program` with `args` and extra environment variables `env`, as `name` in
    /// messages.
    ///
    /// # Errors
    ///
    /// It cannot be spawned.
    pub fn start<A, K, V>(
        name: &str,
        program: &std::path::Path,
        args: impl IntoIterator<Item = A>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Service, Error>
    where
        A: Into<OsString>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut cmd = Command::new(program);
        cmd.args(args.into_iter().map(Into::into))
            .envs(env.into_iter().map(|(k, v)| (k.into(), v.into())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = spawn(cmd).map_err(|source| Error::Spawn {
            program: program.to_owned(),
            source,
        })?;
        let output = Arc::new(Lines::default());
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let output = output.clone();
            // Ends at the child's exit (end of file).
            std::thread::Builder::new()
                .name(format!("testkit-{name}-output"))
                .spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        let mut l = output.lines.lock().unwrap_or_else(|e| e.into_inner());
                        l.0.push(line);
                        output.more.notify_all();
                    }
                    let mut l = output.lines.lock().unwrap_or_else(|e| e.into_inner());
                    l.1 += 1;
                    output.more.notify_all();
                })
                .map_err(|e| Error::io("spawn an output reader", e))?;
        }
        Ok(Service {
            name: name.to_owned(),
            child: Mutex::new(Some(child)),
            output,
        })
    }

    /// The process id, while it has not been killed.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// Waits up to `timeout` for an output line containing `marker`, and returns what follows
    /// the marker on that line (e.g. `"listening on http://"` → the address).
    ///
    /// # Errors
    ///
    /// No such line within `timeout`, or the process ended first: the message carries its
    /// output.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        let mut l = self.output.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(rest) = l.0.iter().find_map(|line| {
                line.find(marker)
                    .map(|at| line[at + marker.len()..].trim().to_owned())
            }) {
                return Ok(rest);
            }
            let now = Instant::now();
            // Both streams closed: the process is gone and nothing more will come.
            if l.1 == 2 || now >= deadline {
                let why = if l.1 == 2 { "exited" } else { "timed out" };
                return Err(Error::NotReady {
                    what: format!("{} (waiting for {marker:?})", self.name),
                    reason: why.to_owned(),
                    log: l.0.join("\n"),
                });
            }
            l = self
                .output
                .more
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Everything it printed so far (stdout and stderr, line by line as they came).
    pub fn output(&self) -> String {
        self.output
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .join("\n")
    }

    /// SIGKILL and reap (a no-op when already killed).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit code (`None`: killed
    /// by a signal).
    ///
    /// # Errors
    ///
    /// Still running at the deadline (it is then killed).
    pub fn wait_exit(&self, timeout: Duration) -> Result<Option<i32>, Error> {
        let deadline = Instant::now() + timeout;
        let mut l = self.output.lines.lock().unwrap_or_else(|e| e.into_inner());
        // Its streams close when it exits.
        while l.1 < 2 {
            let now = Instant::now();
            if now >= deadline {
                drop(l);
                self.kill();
                return Err(Error::NotReady {
                    what: self.name.clone(),
                    reason: format!("still running after {timeout:?}"),
                    log: self.output(),
                });
            }
            l = self
                .output
                .more
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(l);
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        match child {
            Some(mut c) => c.wait().map(|s| s.code()).map_err(|e| Error::io("wait", e)),
            None => Ok(None),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
