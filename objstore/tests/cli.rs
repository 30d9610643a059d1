//! The `objstore` binary: `serve` on embedded defaults, the operator subcommands, exit codes,
//! configuration errors and graceful shutdown.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Served, scratch_dir};

const BIN: &str = env!("CARGO_BIN_EXE_objstore");

fn serve(extra_config: &str) -> Served {
    common::serve("cli", extra_config, Stdio::piped())
}

fn run(addr: &str, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--addr", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_then_operate_then_shut_down_gracefully() {
    let mut s = serve("");
    let addr = s.addr.clone();
    let (code, out, err) = run(
        &addr,
        &["put", "docs/readme", "-", "--content-type", "text/plain"],
        b"hello objstore",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("revision 1 version 1"), "{out}");
    let (code, out, _) = run(&addr, &["get", "docs/readme"], b"");
    assert_eq!((code, out.as_str()), (0, "hello objstore"));
    let (code, out, _) = run(&addr, &["stat", "docs/readme"], b"");
    assert_eq!(code, 0);
    assert!(
        out.contains("size            14") && out.contains("text/plain"),
        "{out}"
    );
    run(&addr, &["put", "docs/b", "-"], b"x");
    run(&addr, &["put", "other", "-"], b"y");
    let (code, out, _) = run(&addr, &["ls", "docs/"], b"");
    assert_eq!(code, 0);
    let keys: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(keys, ["docs/b", "docs/readme"]);
    let (code, _, err) = run(&addr, &["put", "docs/b", "-", "--if-absent"], b"z");
    assert_eq!(code, 1);
    assert!(err.contains("precondition"), "{err}");
    let (code, out, _) = run(&addr, &["rm", "docs/b"], b"");
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&addr, &["get", "docs/b"], b"");
    assert_eq!(code, 3, "{err}");
    let (code, _, _) = run(&addr, &["rm", "docs/b"], b"");
    assert_eq!(code, 3);

    // Output into a pipe whose reader is gone (`objstore ls | head -0`): the reader's choice,
    // exit 0, no panic.
    for args in [
        &["ls", "docs/"][..],
        &["get", "docs/readme"],
        &["stat", "docs/readme"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .args(["--addr", &addr])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }

    // SIGTERM: graceful shutdown, exit 0.
    let pid = s.child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut s.child, Duration::from_secs(30));
    assert_eq!(status, Some(0), "exit status");
    // Regression: log lines to a pipe carried ANSI colour codes.
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut s.child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("INFO"), "logs were written: {logs}");
    assert!(
        !logs.contains('\x1b'),
        "no colour codes in piped logs: {logs:?}"
    );
    // The governance server had come up alongside.
    let printed: Vec<String> = s.lines.try_iter().collect();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("governance listening on http://127.0.0.1:")),
        "{printed:?}"
    );
}

/// Runs `objstore serve --config file` to its end (a configuration it must refuse).
fn serve_once(file: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn usage_and_configuration_errors_exit_2_and_name_the_key() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: objstore"));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve",
        "put",
        "get",
        "stat",
        "rm",
        "ls",
        "snapshot",
        "Exit codes",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from --help: {help}"
        );
    }
    let out = Command::new(BIN).args(["get"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["put", "k", "--ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ttl"),
        "a bad duration names its option"
    );

    let dir = std::env::temp_dir().join(format!("objstore-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[objstore]\nmax-memory = \"lots\"\n").unwrap();
    let out = serve_once(&file);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("max-memory"),
        "{err}"
    );
    std::fs::write(&file, "[objstore]\nlisten-addr = \"x\"\n").unwrap();
    let out = serve_once(&file);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen-addr"));

    // An unreachable server: a clear error, exit 1.
    let (code, _, err) = run("127.0.0.1:1", &["get", "k", "--timeout", "1s"], b"");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("objstore: error: cannot connect to 127.0.0.1:1\n  caused by: "),
        "the error, then its causes: {err}"
    );
}

fn sigkill(child: &mut Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

#[test]
fn snapshots_survive_restarts_and_a_sigkill_mid_snapshot() {
    let dir = scratch_dir("cli-snap");
    let path = dir.join("store.snap");
    // 2 MB/s: a 6 MB snapshot takes about 3 s, long enough to kill the server in the middle.
    let config = format!(
        "[objstore.snapshot]\npath = \"{}\"\ninterval = \"0s\"\nwrite-rate-limit = \"2MB\"\n",
        path.display()
    );
    let mut s = serve(&config);
    let addr = s.addr.clone();
    for i in 0..10 {
        let (code, _, err) = run(
            &addr,
            &["put", &format!("small/{i}"), "-"],
            format!("v{i}").as_bytes(),
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = run(&addr, &["snapshot"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10 objects"), "{out}");
    let first = std::fs::read(&path).unwrap();

    // 6 MB more, then a snapshot killed half way.
    let blob = vec![7u8; 64 * 1024];
    for i in 0..96 {
        let (code, _, err) = run(&addr, &["put", &format!("big/{i}"), "-"], &blob);
        assert_eq!(code, 0, "{err}");
    }
    let mut snapping = Command::new(BIN)
        .args(["snapshot", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary file exists and has grown.
    let tmp_prefix = ".store.snap.tmp-";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let growing = std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(tmp_prefix)
                && e.metadata().map(|m| m.len() > 1_000_000).unwrap_or(false)
        });
        if growing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot in progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigkill(&mut s.child);
    let _ = snapping.wait();
    // The previous snapshot is intact, byte for byte.
    assert_eq!(std::fs::read(&path).unwrap(), first);

    // A restart loads it (and cleans up the leftover temporary file).
    let s2 = serve(&config);
    let (code, out, _) = run(&s2.addr, &["get", "small/3"], b"");
    assert_eq!((code, out.as_str()), (0, "v3"));
    let (code, _, _) = run(&s2.addr, &["get", "big/0"], b"");
    assert_eq!(code, 3, "written after the last complete snapshot");
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(tmp_prefix))
        .count();
    assert_eq!(leftovers, 0);
    drop(s2);

    // A corrupt snapshot: refused with a clear error (exit 1), or skipped when asked.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let file = dir.join("refuse.toml");
    std::fs::write(
        &file,
        format!(
            "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\n{config}"
        ),
    )
    .unwrap();
    let out = serve_once(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains("store.snap") && err.contains("start-empty"),
        "{err}"
    );
    let mut s3 = serve(&format!("{config}on-corrupt = \"start-empty\"\n"));
    let (code, _, _) = run(&s3.addr, &["get", "small/3"], b"");
    assert_eq!(code, 3);
    // A graceful shutdown writes a snapshot; the next start has the data.
    run(&s3.addr, &["put", "kept", "-"], b"through shutdown");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(s3.child.id() as i32, libc::SIGTERM) },
        0
    );
    assert_eq!(wait_exit(&mut s3.child, Duration::from_secs(30)), Some(0));
    let s4 = serve(&config);
    let (code, out, _) = run(&s4.addr, &["get", "kept"], b"");
    assert_eq!((code, out.as_str()), (0, "through shutdown"));
    drop(s4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plain HTTP/1.1 GET on loopback: the body.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// What `objstore serve` runs besides the gRPC service: periodic snapshots (no call, no
/// shutdown asked for one), active expiry (an object nobody reads is removed on its own and
/// watchers see it go), and its registration in the registry, shown by the governance
/// server's `/registry`.
#[tokio::test]
async fn serve_snapshots_periodically_expires_actively_and_registers() {
    use objstore::client::{Client, ClientConfig, PutOptions};
    use tokio_stream::StreamExt;

    let dir = scratch_dir("cli-periodic");
    let path = dir.join("periodic.snap");
    let s = serve(&format!(
        "[objstore.snapshot]\npath = \"{}\"\ninterval = \"1s\"\n",
        path.display()
    ));
    let governance = s.printed("governance listening on http://");
    let client = Client::connect(&s.addr, ClientConfig::default())
        .await
        .unwrap();
    let mut changes = client.watch(b"", 0, false).await.unwrap();
    client
        .put(
            b"keep",
            bytes::Bytes::from_static(b"kept"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    client
        .put(
            b"brief",
            bytes::Bytes::from_static(b"gone soon"),
            PutOptions {
                ttl: Some(Duration::from_millis(200)),
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();

    // Active expiry: "brief" is never read, yet it expires and the watcher is told.
    let expired = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(c) = changes.next().await {
            let c = c.unwrap();
            if c.kind == "expire" {
                return c.key;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the background sweep expires an unread object");
    assert_eq!(&expired[..], b"brief");

    // A periodic snapshot appears with no call asking for one, and a later one holds "keep"
    // (the first may have been taken before it was written).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let has_keep = path.exists()
            && objstore::snapshot::load(&path, objstore::engine::EngineConfig::default())
                .expect("a periodic snapshot loads")
                .0
                .get(b"keep")
                .is_some();
        if has_keep {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no periodic snapshot with \"keep\" at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Registered: the in-process registry lists this instance's gRPC address.
    let registry = http_get(&governance, "/registry").await;
    assert!(registry.contains(&s.addr), "{registry}");
    assert!(registry.contains("grpc"), "{registry}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `resp-listen` opens the RESP port beside gRPC, on the same engine.
#[tokio::test]
async fn serve_opens_the_resp_port_on_the_same_engine() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = serve("resp-listen = \"127.0.0.1:0\"\n");
    let resp = s.printed("objstore RESP listening on redis://");
    let (code, _, err) = run(&s.addr, &["put", "from-grpc", "-"], b"hello");
    assert_eq!(code, 0, "{err}");
    let mut sock = tokio::net::TcpStream::connect(&resp).await.unwrap();
    sock.write_all(b"*2\r\n$3\r\nGET\r\n$9\r\nfrom-grpc\r\n*1\r\n$4\r\nQUIT\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"$5\r\nhello\r\n+OK\r\n");
}

#[test]
fn serve_with_an_auth_token_and_no_snapshot_on_shutdown() {
    let dir = scratch_dir("auth");
    let snap = dir.join("store.snap");
    let mut s = serve(&format!(
        "auth-token = \"s3cret-token\"\n[objstore.snapshot]\npath = \"{}\"\ninterval = \"1h\"\non-shutdown = false\n",
        snap.display()
    ));
    let objstore = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("OBJSTORE_ADDR")
            .env_remove("OBJSTORE_TOKEN")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let addr = s.addr.clone();
    // Without the token: refused, and said so.
    let (code, _, err) = objstore(&["ls", "--addr", &addr], &[]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.to_lowercase().contains("refused") || err.contains("token"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the token is never printed: {err}");
    // A wrong token: refused too.
    let (code, _, err) = objstore(&["ls", "--addr", &addr, "--token", "wrong"], &[]);
    assert_ne!(code, 0, "{err}");
    // --token, then the environment for both the token and the address.
    let (code, _, err) = objstore(
        &[
            "put",
            "k",
            "-",
            "--addr",
            &addr,
            "--token",
            "s3cret-token",
            "--ttl",
            "1h",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let env = [
        ("OBJSTORE_ADDR", addr.as_str()),
        ("OBJSTORE_TOKEN", "s3cret-token"),
    ];
    let (code, out, err) = objstore(&["stat", "k"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("expires"),
        "--ttl gave the object an expiry: {out}"
    );
    let (code, out, err) = objstore(&["ls", ""], &env);
    assert_eq!((code, out.lines().count()), (0, 1), "{out}{err}");

    // SIGTERM: a graceful exit, and with `on-shutdown = false` no snapshot is written.
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(wait_exit(&mut s.child, Duration::from_secs(30)), Some(0));
    assert!(!snap.exists(), "a snapshot was written on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of a process, from `/proc/<pid>/statm`.
fn rss_bytes(pid: u32) -> usize {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm readable");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(pages > 0, "statm reads no resident pages: {statm}");
    pages * 4096
}

/// Raises this process's open-file limit to its hard limit (the server child inherits it)
/// and fails, naming the fix, if that is too low for `needed` descriptors.
fn raise_nofile(needed: u64) {
    // SAFETY: getrlimit/setrlimit fill and read a plain struct of the size passed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        assert!(
            lim.rlim_cur >= needed,
            "this test needs {needed} open files and the hard limit is {}: raise it (ulimit -Hn)",
            lim.rlim_cur
        );
    }
}

/// Bad input on the RESP port of a real `objstore serve`: binary garbage, a 1 GiB bulk
/// length, 100 million array elements announced, half a command then a disconnect, and 10k
/// idle connections. Each gets an error or a close; the server keeps serving, loses nothing
/// and its resident memory stays bounded.
#[test]
fn the_resp_port_survives_bad_input_with_bounded_memory() {
    use std::io::Read;
    use std::net::TcpStream;
    const IDLE: usize = 10_000;
    // Per process: this one holds the client ends, the server the other ends.
    raise_nofile(IDLE as u64 + 512);
    let s = serve("resp-listen = \"127.0.0.1:0\"\n");
    let resp = s.printed("objstore RESP listening on redis://");
    let pid = s.child.id();
    let mut keep =
        testkit::resp::Conn::connect(resp.parse().unwrap(), Duration::from_secs(10)).unwrap();
    assert_eq!(
        keep.command(&["SET", "kept", "v"]).unwrap().text().unwrap(),
        "OK"
    );
    let before = rss_bytes(pid);

    // Answered with an error, then closed: read to the end (bounded by the read timeout).
    let refused = |bytes: &[u8]| -> String {
        let mut c = TcpStream::connect(&resp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    };
    let mut garbage = vec![0u8; 64 * 1024];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    garbage[0] = 0xff;
    for (what, bytes) in [
        ("binary garbage", garbage.as_slice()),
        (
            "a 1 GiB bulk length",
            &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n"[..],
        ),
        ("100 million elements", b"*100000000\r\n"),
        ("a negative length", b"*1\r\n$-7\r\n"),
    ] {
        let reply = refused(bytes);
        assert!(
            reply.starts_with("-ERR Protocol error"),
            "{what}: {reply:?}"
        );
    }
    // Half a command, then gone: nothing is written.
    let mut half = TcpStream::connect(&resp).unwrap();
    half.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nabc")
        .unwrap();
    drop(half);

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&resp).unwrap());
    }
    // One accept loop takes connections in the order they were made, and counts each as it
    // accepts it: once a connection made after all the idle ones has been answered, every
    // idle one is accepted and counted. No waiting on the clock.
    let mut last =
        testkit::resp::Conn::connect(resp.parse().unwrap(), Duration::from_secs(30)).unwrap();
    let info = last.command(&["INFO", "clients"]).unwrap().text().unwrap();
    let connected: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The idle ones, `keep` and `last` (the garbage and half-command ones may still be closing).
    assert!(
        connected >= IDLE + 2,
        "{connected} connected: all {IDLE} idle connections are open"
    );
    let with_idle = rss_bytes(pid);
    // A socket, a task and a connection's state each; no buffers until a first byte.
    let per_connection = with_idle.saturating_sub(before) / IDLE;
    assert!(
        per_connection < 16 * 1024,
        "{per_connection} bytes of resident memory per idle connection"
    );
    // Still serving, nothing lost, nothing half-written.
    assert_eq!(keep.command(&["GET", "kept"]).unwrap().text().unwrap(), "v");
    let mut fresh =
        testkit::resp::Conn::connect(resp.parse().unwrap(), Duration::from_secs(10)).unwrap();
    assert_eq!(
        fresh.command(&["EXISTS", "half", "k"]).unwrap(),
        testkit::resp::Reply::Integer(0)
    );
    assert_eq!(fresh.command(&["PING"]).unwrap().text().unwrap(), "PONG");
    // The server goes first, so the 10k closed connections wait out TIME_WAIT on its port,
    // not on this machine's ephemeral ports (which later tests' connects need).
    drop(s);
    drop(idle);
}
