//! The `jupiter` binary: SIGTERM starts a graceful shutdown and the process exits 0; `demo`
//! runs end to end; bad configuration exits 2 with the position of the error.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jupiter");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let cfg = write_config(
        "[governance]\naddr = \"127.0.0.1:0\"\n[app.shutdown]\ngrace = \"100ms\"\n[log]\nformat = \"json\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(cfg.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("governance listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();

    // Wait until ready (bounded), then signal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ready = rt.block_on(async {
        for _ in 0..200 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = String::new();
                s.read_to_string(&mut buf).await.unwrap();
                if buf.starts_with("HTTP/1.1 200") {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    assert!(ready, "never became ready");

    // SAFETY: kill(2) on a child process we own and have not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = rt.block_on(async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let order = ["SIGTERM received", "\"stopped\""];
    let positions: Vec<usize> = order
        .iter()
        .map(|m| {
            logs.find(m)
                .unwrap_or_else(|| panic!("{m} missing from:\n{logs}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{logs}");
}

#[test]
fn demo_runs_end_to_end() {
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("GET /health/ready -> 200"), "{stdout}");
    assert!(stdout.contains("GET /metrics -> 200"), "{stdout}");
    assert!(stdout.contains("shut down cleanly"), "{stdout}");
    // Regression: log lines to a pipe carried ANSI colour codes (human format, the default).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "logs were written: {stderr}");
    assert!(
        !stderr.contains('\x1b') && !stdout.contains('\x1b'),
        "no colour codes in piped output: {stderr:?}"
    );
}

#[test]
fn bad_config_exits_2_naming_the_position() {
    let cfg = write_config("[governance]\naddr = \"not an address\"\n");
    let out = Command::new(BIN)
        .arg("check")
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "jupiter: error: {}:2:1: governance.addr: invalid socket address syntax",
            cfg.path().display()
        )),
        "{stderr}"
    );
    let out = Command::new(BIN).arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unrecognized subcommand 'bogus'"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_prints_the_cause_under_the_error() {
    let out = Command::new(BIN)
        .args(["check", "/nonexistent/jupiter.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "jupiter: error: /nonexistent/jupiter.toml: cannot read config file\n  caused by: "
        ),
        "{stderr}"
    );
}

#[test]
fn check_into_a_closed_pipe_is_not_a_panic() {
    // The reading end is closed before the program starts: its first write fails with EPIPE
    // (`jupiter check … | head -0`). That is the reader's choice, not an error.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let cfg = write_config("");
    let out = Command::new(BIN)
        .arg("check")
        .arg(cfg.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn help_is_not_an_error() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for command in ["demo", "serve", "check", "--config <FILE>", "Exit codes"] {
        assert!(
            stdout.contains(command),
            "{command} missing from --help: {stdout}"
        );
    }
}

/// Runs `jupiter serve` with `config` (and `RUST_LOG` = `rust_log` when given) until its log
/// says every component serves, then SIGTERM; returns (exit code, stdout, stderr).
fn serve_then_term(config: &str, rust_log: Option<&str>) -> (Option<i32>, String, String) {
    let cfg = write_config(config);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(cfg.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("all components serving") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The readiness signal is a log line at INFO (the callers keep that level).
    let serving = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    // SAFETY: kill(2) on a child process we own and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    assert!(serving, "never served:\n{stderr}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn governance_off_human_logs_and_rust_log_override() {
    // governance.enabled = false: the app serves and stops without a governance server.
    let (code, stdout, stderr) = serve_then_term(
        "[governance]\nenabled = false\n[app.shutdown]\ngrace = \"50ms\"\n[log]\nformat = \"human\"\nlevel = \"info\"\n",
        None,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("governance listening"), "{stdout}");
    // format = "human": plain lines with the level, not JSON objects.
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(" INFO ") && !first.starts_with('{'),
        "{stderr}"
    );

    // level = "warn" hides INFO; RUST_LOG overrides the configured level. (`demo`, which
    // ends by itself: with INFO hidden there is no log line to wait for.)
    let quiet = write_config("[log]\nlevel = \"warn\"\n");
    let demo = |rust_log: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(quiet.path())
            .arg("demo")
            .env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = demo(None);
    assert!(!stderr.contains("INFO"), "{stderr}");
    let stderr = demo(Some("info"));
    assert!(stderr.contains("all components serving"), "{stderr}");
}

#[test]
fn check_prints_the_effective_config_with_secrets_redacted() {
    let cfg = write_config(
        "[app]\nname = \"shop\"\n[redis.main]\nurl = \"redis://:hunter2@127.0.0.1:6379\"\npassword = \"hunter2\"\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg(cfg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("shop"),
        "the effective config is printed: {stdout}"
    );
    assert!(stdout.contains("password"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "a secret reached the output: {stdout}"
    );
}
