//! Child processes: spawned from one long-lived thread so they die with the test process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// The process controls every server handle offers, on its `proc` field; `restart` waits with
/// the handle's own `wait_ready(&self) -> Result<(), Error>`.
macro_rules! process_controls {
    () => {
        /// Process id, while running.
        pub fn pid(&self) -> Option<u32> {
            self.proc.pid()
        }

        /// Whether the process runs (a paused process runs).
        pub fn is_running(&self) -> bool {
            self.proc.is_running()
        }

        /// SIGKILL: connections break at once.
        pub fn kill(&self) {
            self.proc.kill();
        }

        /// SIGSTOP: connections stay open but nothing is answered.
        pub fn pause(&self) {
            self.proc.pause();
        }

        /// SIGCONT.
        pub fn resume(&self) {
            self.proc.resume();
        }

        /// Starts the process again with the same ports and directory (after `kill`, or
        /// killing it first) and waits until it answers.
        ///
        /// # Panics
        ///
        /// The server does not come back (the panic message carries its log tail).
        pub fn restart(&self) {
            self.try_restart().unwrap_or_else(|e| panic!("{e}"));
        }

        /// [`restart`](Self::restart) returning the error.
        pub fn try_restart(&self) -> Result<(), Error> {
            self.proc.start()?;
            self.wait_ready()
        }
    };
}
pub(crate) use process_controls;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the spawner thread.
///
/// `PR_SET_PDEATHSIG` kills a child when the *thread* that forked it exits, not the process.
/// Test threads end after each test, so a server kept in a `static` for several tests would be
/// killed under them if the test thread forked it. All forks therefore happen on one thread that
/// lives as long as the process: when the test binary dies (even by SIGKILL), so do its servers.
pub(crate) fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the testkit spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Finds `name` in `PATH`.
/// The path of a tool the tests need (`redis-cli`, `redis-benchmark`, …), looked up in `PATH`.
///
/// # Panics
///
/// The binary is missing: the message names it and the command that installs it.
pub fn binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn find_binary(name: &str) -> Result<PathBuf, Error> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingBinary {
                binary: name.to_owned(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingBinary {
            binary: name.to_owned(),
        })
}

/// A server process that can be killed, paused and restarted with the same arguments.
#[derive(Debug)]
pub(crate) struct Proc {
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    child: Option<Child>,
    paused: bool,
}

/// Makes the child get SIGKILL when the thread that forked it (the spawner) goes away.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

impl Proc {
    pub(crate) fn new(program: PathBuf, args: Vec<OsString>, log: PathBuf) -> Self {
        Proc {
            program,
            args,
            log,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the process (killing a previous one), output appended to the log file.
    pub(crate) fn start(&self) -> Result<(), Error> {
        self.kill();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("open {}", self.log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("clone log handle", e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let child = spawn(cmd).map_err(|source| Error::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let mut st = self.lock();
        st.child = Some(child);
        st.paused = false;
        Ok(())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.lock()
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub(crate) fn is_running(&self) -> bool {
        let mut st = self.lock();
        matches!(st.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// SIGKILL and reap. A no-op when not running.
    pub(crate) fn kill(&self) {
        let mut st = self.lock();
        if let Some(mut child) = st.child.take() {
            // SIGKILL ends a stopped process as it is: no SIGCONT first, which would let a
            // paused server answer what it holds before it dies.
            let _ = child.kill();
            let _ = child.wait();
        }
        st.paused = false;
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub(crate) fn pause(&self) {
        let mut st = self.lock();
        if let Some(child) = &st.child {
            sigstop(child);
            st.paused = true;
        }
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        let mut st = self.lock();
        if let Some(child) = &st.child {
            signal(child.id(), libc::SIGCONT);
        }
        st.paused = false;
    }

    /// The last lines of the process's output.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGSTOP to a child the test spawned itself, returning once every thread of it has stopped
/// (kill(2) returns when the signal is queued; a process running on another CPU answers
/// until then).
pub fn sigstop(child: &std::process::Child) {
    signal(child.id(), libc::SIGSTOP);
    wait_stopped(child.id());
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we have not reaped, so the pid cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits until the child `pid` has stopped, every thread of it (the kernel reports a group
/// stop to the parent once it is complete), or has exited. WNOWAIT leaves the child's state
/// as it is: its exit stays for std's `Child::wait`, and a stop is reported only while the
/// child is stopped, so a later pause waits for its own.
fn wait_stopped(pid: u32) {
    // SAFETY: waitid(2) on our own unreaped child, filling a siginfo_t we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let options = libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT;
        loop {
            let r = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options);
            if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return;
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let all: Vec<&str> = buf.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
