//! The RESP port on the wire, driven by a plain RESP client (testkit's):
//! - it answers as redis-server does: the same commands, sent to a real redis-server and to
//!   objstore's port one after the other, get equal replies (error texts included), under
//!   RESP2 and RESP3; only what the two cannot agree on by design is left out (server names,
//!   versions, ids, `FLUSHDB`'s default refusal);
//! - its own rules: `AUTH` when a token is set, the shadow rule and switch, `FLUSHDB`, `INFO`
//!   and `COMMAND`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::shadow::{ShadowMode, ShadowSwitch};
use objstore::engine::{Engine, EngineConfig};
use objstore::resp::{RespConfig, RespShadow, serve};
use testkit::resp::{Conn, Reply};

/// A running port: its address, engine and metrics; stopped when dropped.
struct Port {
    addr: SocketAddr,
    engine: Engine,
    metrics: jupiter_core::Metrics,
    _stop: std::sync::mpsc::Sender<()>,
}

/// objstore's RESP port with the default settings.
fn objstore_port() -> (SocketAddr, Port) {
    let p = port(RespConfig::default());
    (p.addr, p)
}

/// objstore's RESP port on its own thread's runtime (the blocking testkit client drives it).
fn port(config: RespConfig) -> Port {
    let engine = Engine::new(EngineConfig::default());
    let metrics = jupiter_core::Metrics::new();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (e, m) = (engine.clone(), metrics.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let stop = tokio::task::spawn_blocking(move || {
                let _ = stop_rx.recv();
            });
            serve(e, listener, config, &m, async {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
    });
    Port {
        addr: addr_rx.recv().unwrap(),
        engine,
        metrics,
        _stop: stop_tx,
    }
}

fn connect(addr: SocketAddr) -> Conn {
    Conn::connect(addr, Duration::from_secs(10)).unwrap()
}

/// The commands of the comparison, in order (each sees what the ones before it wrote).
fn script() -> Vec<Vec<String>> {
    let max = i64::MAX.to_string();
    let min = i64::MIN.to_string();
    let long = "x".repeat(200);
    let words: &[&[&str]] = &[
        &["PING"],
        &["PING", "hi"],
        &["PING", "a", "b"],
        &["ECHO", "x"],
        &["ECHO"],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "nokey"],
        &["get", "k"],
        &["SET", "k", "v", "NX"],
        &["SET", "k", "v2", "XX", "GET"],
        &["SET", "k", "v3", "GET"],
        &["SET", "nk", "v", "XX"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "EX", "0"],
        &["SET", "k", "v", "EX", "-5"],
        &["SET", "k", "v", "EX", "abc"],
        &["SET", "k", "v", "EX", "10", "PX", "10"],
        &["SET", "k", "v", "NX", "XX"],
        &["SET", "k", "v", "KEEPTTL", "EX", "10"],
        &["SET", "k", "v", "BOGUS"],
        &["SET", "k", "v", "EX", "@max"],
        &["SET", "k", "v", "PX", "@max"],
        &["SET", "k", "v", "EXAT", "@max"],
        &["SET", "t", "v", "EX", "100"],
        &["TTL", "t"],
        &["SET", "t", "v2", "KEEPTTL"],
        &["TTL", "t"],
        &["SET", "t", "v3"],
        &["TTL", "t"],
        &["TTL", "nokey"],
        &["PTTL", "nokey"],
        &["PTTL", "t"],
        &["SETNX", "n", "1"],
        &["SETNX", "n", "2"],
        &["SETEX", "s", "0", "v"],
        &["SETEX", "s", "x", "v"],
        &["PSETEX", "s", "-1", "v"],
        &["SETEX", "s", "@max", "v"],
        &["SETEX", "s", "100", "v"],
        &["TTL", "s"],
        &["GETEX", "s"],
        &["GETEX", "s", "PERSIST"],
        &["TTL", "s"],
        &["GETEX", "s", "EX", "100"],
        &["TTL", "s"],
        &["GETEX", "s", "EX", "0"],
        &["GETEX", "s", "EX", "x"],
        &["GETEX", "s", "EX"],
        &["GETEX", "s", "BOGUS"],
        &["GETEX", "s", "EX", "1", "PX", "1"],
        &["GETEX", "nokey", "EX", "10"],
        &["SET", "p", "v", "EXAT", "1"],
        &["GET", "p"],
        &["SET", "p", "v"],
        &["SET", "p", "w", "PXAT", "1", "GET"],
        &["EXISTS", "p"],
        &["SET", "p", "v"],
        &["GETEX", "p", "PX", "0"],
        &["GETEX", "p", "EXAT", "1"],
        &["EXISTS", "p"],
        &["GETEX", "nokey", "EX", "x"],
        &["GETEX", "nokey", "BOGUS"],
        &["GETDEL", "n"],
        &["GETDEL", "n"],
        &["APPEND", "a", "hello"],
        &["APPEND", "a", " world"],
        &["GET", "a"],
        &["STRLEN", "a"],
        &["STRLEN", "nokey"],
        &["GETRANGE", "a", "0", "4"],
        &["GETRANGE", "a", "-5", "-1"],
        &["GETRANGE", "a", "5", "2"],
        &["GETRANGE", "a", "0", "1000"],
        &["GETRANGE", "nokey", "0", "10"],
        &["GETRANGE", "a", "x", "1"],
        &["SETRANGE", "a", "6", "WORLD"],
        &["SETRANGE", "r", "3", "x"],
        &["GET", "r"],
        &["SETRANGE", "r2", "3", ""],
        &["EXISTS", "r2"],
        &["SETRANGE", "a", "-1", "x"],
        &["TYPE", "a"],
        &["TYPE", "nokey"],
        &["MSET", "m1", "1", "m2", "2"],
        &["MSET", "m1"],
        &["MSET", "m1", "1", "m2"],
        &["MGET", "m1", "m2", "nokey"],
        &["MSETNX", "m1", "x", "m3", "y"],
        &["MSETNX", "m3", "y", "m4", "z"],
        &["MGET", "m3", "m4"],
        &["EXISTS", "m1", "m2", "nokey", "m1"],
        &["DEL", "m1", "nokey"],
        &["UNLINK", "m2"],
        &["INCR", "c"],
        &["INCRBY", "c", "10"],
        &["DECR", "c"],
        &["DECRBY", "c", "5"],
        &["INCRBY", "c", "x"],
        &["INCR", "a"],
        &["SET", "big", "@max"],
        &["INCR", "big"],
        &["DECRBY", "c", "@min"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["INCRBYFLOAT", "f", "x"],
        &["INCRBYFLOAT", "a", "1"],
        &["EXPIRE", "c", "100"],
        &["TTL", "c"],
        &["EXPIRE", "c", "100", "NX"],
        &["EXPIRE", "c", "200", "XX"],
        &["TTL", "c"],
        &["EXPIRE", "c", "50", "GT"],
        &["EXPIRE", "c", "50", "LT"],
        &["TTL", "c"],
        &["EXPIRE", "big", "10", "XX"],
        &["EXPIRE", "big", "10", "GT"],
        &["EXPIRE", "big", "10", "LT"],
        &["PERSIST", "big"],
        &["EXPIRE", "c", "1", "NX", "XX"],
        &["EXPIRE", "c", "1", "GT", "LT"],
        &["EXPIRE", "c", "1", "BOGUS"],
        &["EXPIRE", "c", "x"],
        &["EXPIRE", "c", "@max"],
        &["PEXPIRE", "c", "@max"],
        &["EXPIRE", "c", "@min"],
        &["PERSIST", "c"],
        &["PERSIST", "c"],
        &["TTL", "c"],
        &["EXPIRETIME", "c"],
        &["EXPIRETIME", "nokey"],
        &["EXPIRE", "nokey", "10"],
        &["EXPIREAT", "c", "1"],
        &["EXISTS", "c"],
        &["SET", "c", "1"],
        &["PEXPIREAT", "c", "1"],
        &["EXISTS", "c"],
        &["SET", "c", "1"],
        &["EXPIRE", "c", "-1"],
        &["EXISTS", "c"],
        &["SELECT", "0"],
        &["SELECT", "1000"],
        &["SELECT", "x"],
        &["AUTH", "pw"],
        &["AUTH", "default", "pw"],
        &["AUTH", "nobody", "pw"],
        &["AUTH", "a", "b", "c"],
        &["CLIENT", "SETNAME", "has space"],
        &["CLIENT", "SETNAME", "ok-name"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "NOSUCH"],
        &["CLIENT", "SETNAME"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["SCAN", "x"],
        &["SCAN", "0", "COUNT", "0"],
        &["SCAN", "0", "COUNT", "x"],
        &["SCAN", "0", "BOGUS", "1"],
        &["SCAN", "0", "MATCH"],
        &["NOSUCH"],
        &["NOSUCH", "a", "b"],
        &["nosuch", "with\r\nbreak"],
        &["NOSUCH", "@long", "@long"],
        &["@long"],
        &["CONFIG", "GET", "no-such-parameter"],
        &["COMMAND", "NOSUCH"],
        &["DBSIZE"],
    ];
    words
        .iter()
        .map(|w| {
            w.iter()
                .map(|a| match *a {
                    "@max" => max.clone(),
                    "@min" => min.clone(),
                    "@long" => long.clone(),
                    a => a.to_owned(),
                })
                .collect()
        })
        .collect()
}

/// Runs the script on both, reply by reply; returns the mismatches.
fn compare(redis: &mut Conn, ours: &mut Conn, script: &[Vec<String>]) -> Vec<String> {
    let mut diffs = Vec::new();
    for words in script {
        let want = redis.command(words).unwrap();
        let got = ours.command(words).unwrap();
        if want != got {
            diffs.push(format!(
                "{words:?}\n  redis:    {want:?}\n  objstore: {got:?}"
            ));
        }
    }
    diffs
}

#[test]
fn replies_and_error_texts_match_redis_server_under_resp2_and_resp3() {
    let server = testkit::RedisServer::start();
    let (addr, _stop) = objstore_port();
    let script = script();
    let mut diffs = compare(&mut connect(server.addr()), &mut connect(addr), &script);
    // RESP3 on fresh connections and fresh keys: nulls are `_`, maps are maps.
    let (mut redis, mut ours) = (connect(server.addr()), connect(addr));
    for c in [&mut redis, &mut ours] {
        let hello = c.command(&["HELLO", "3"]).unwrap();
        assert!(matches!(hello, Reply::Array(Some(_))), "{hello:?}");
    }
    let resp3: Vec<Vec<String>> = [
        &["GET", "r3:nokey"][..],
        &["MGET", "r3:a", "r3:b"],
        &["SET", "r3:a", "v", "GET"],
        &["SET", "r3:a", "w", "GET"],
        &["GETDEL", "r3:nokey"],
        &["GETEX", "r3:nokey"],
        &["CONFIG", "GET", "no-such-parameter"],
        &["SCAN", "0", "MATCH", "r3:*", "COUNT", "1000"],
        &["HELLO", "5"],
    ]
    .iter()
    .map(|w| w.iter().map(|s| s.to_string()).collect())
    .collect();
    diffs.extend(compare(&mut redis, &mut ours, &resp3));
    assert!(
        diffs.is_empty(),
        "{} mismatches:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Every key of a full `SCAN` pass with `MATCH`, `COUNT` and `TYPE`.
fn scan_all(c: &mut Conn, extra: &[&str]) -> BTreeSet<String> {
    let mut cursor = "0".to_owned();
    let mut keys = BTreeSet::new();
    for _ in 0..100_000 {
        let mut words = vec!["SCAN", cursor.as_str()];
        words.extend_from_slice(extra);
        let Reply::Array(Some(page)) = c.command(&words).unwrap() else {
            panic!("SCAN reply")
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(found))] = &page[..] else {
            panic!("SCAN page {page:?}")
        };
        for k in found {
            assert!(keys.insert(k.text().unwrap()), "{k:?} returned twice");
        }
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            return keys;
        }
    }
    panic!("the pass did not end");
}

#[test]
fn scan_with_match_count_and_type_finds_what_redis_finds() {
    let server = testkit::RedisServer::start();
    let (addr, _stop) = objstore_port();
    let (mut redis, mut ours) = (connect(server.addr()), connect(addr));
    for c in [&mut redis, &mut ours] {
        for i in 0..3000 {
            let key = format!("user:{i}:{}", if i % 3 == 0 { "name" } else { "mail" });
            assert_eq!(
                c.command(&["SET", key.as_str(), "v"]).unwrap(),
                Reply::Simple("OK".into())
            );
        }
        c.command(&["SET", "h[x]llo", "v"]).unwrap();
    }
    for extra in [
        &[][..],
        &["COUNT", "7"],
        &["MATCH", "user:*:name", "COUNT", "100"],
        &["MATCH", "user:1?:*"],
        &["MATCH", "user:[1-2]*:name", "COUNT", "1000"],
        &["MATCH", "h\\[x\\]llo"],
        &["TYPE", "string", "COUNT", "500"],
        &["TYPE", "hash"],
    ] {
        let want = scan_all(&mut redis, extra);
        let got = scan_all(&mut ours, extra);
        assert_eq!(got, want, "SCAN {extra:?}");
    }
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn error_text(r: Reply) -> String {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn with_a_token_nothing_runs_before_auth() {
    let p = port(RespConfig {
        auth_token: Some("s3cret".into()),
        ..RespConfig::default()
    });
    assert!(
        !format!(
            "{:?}",
            RespConfig {
                auth_token: Some("s3cret".into()),
                ..RespConfig::default()
            }
        )
        .contains("s3cret")
    );
    let mut c = connect(p.addr);
    for words in [
        &["GET", "k"][..],
        &["PING"],
        &["SET", "k", "v"],
        &["SCAN", "0"],
    ] {
        assert_eq!(
            error_text(c.command(words).unwrap()),
            "NOAUTH Authentication required.",
            "{words:?}"
        );
    }
    assert!(
        error_text(c.command(&["HELLO", "3"]).unwrap()).starts_with("NOAUTH HELLO must be called")
    );
    assert!(error_text(c.command(&["AUTH", "wrong"]).unwrap()).starts_with("WRONGPASS"));
    assert!(error_text(c.command(&["AUTH", "nobody", "s3cret"]).unwrap()).starts_with("WRONGPASS"));
    assert_eq!(
        c.command(&["GET", "k"]).unwrap(),
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(p.engine.revision(), 0, "nothing written before AUTH");
    assert_eq!(c.command(&["AUTH", "s3cret"]).unwrap(), ok());
    assert_eq!(c.command(&["SET", "k", "v"]).unwrap(), ok());
    // HELLO 3 with AUTH authenticates and switches protocol in one step.
    let mut c = connect(p.addr);
    let Reply::Array(Some(hello)) = c
        .command(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "app"])
        .unwrap()
    else {
        panic!("HELLO reply")
    };
    let proto = hello.iter().position(|r| r == &bulk("proto")).unwrap();
    assert_eq!(hello[proto + 1], Reply::Integer(3));
    assert_eq!(
        c.command(&["GET", "nokey"]).unwrap(),
        Reply::Null,
        "RESP3 null"
    );
    assert_eq!(c.command(&["CLIENT", "GETNAME"]).unwrap(), bulk("app"));
}

/// Counted refusals of shadow requests in the port's metrics.
fn shadow_refusals(p: &Port) -> usize {
    p.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("server_handle_total") && l.contains("code=\"ShadowRefused\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize)
        .sum()
}

#[test]
fn shadow_connections_use_the_shadow_namespace_and_follow_the_switch() {
    let switch = ShadowSwitch::new(ShadowMode::On);
    let p = port(RespConfig {
        shadow: RespShadow {
            switch: switch.clone(),
            ..RespShadow::default()
        },
        ..RespConfig::default()
    });
    let mut live = connect(p.addr);
    assert_eq!(live.command(&["SET", "k", "live"]).unwrap(), ok());
    // By the AUTH user (no token set: any password) and by the client-name suffix.
    let mut by_user = connect(p.addr);
    assert_eq!(by_user.command(&["AUTH", "shadow", "any"]).unwrap(), ok());
    let mut by_name = connect(p.addr);
    assert_eq!(
        by_name
            .command(&["CLIENT", "SETNAME", "loadtest:shadow"])
            .unwrap(),
        ok()
    );
    assert_eq!(by_user.command(&["SET", "k", "shadow"]).unwrap(), ok());
    assert_eq!(
        by_name.command(&["MSET", "a", "1", "b", "2"]).unwrap(),
        ok()
    );
    assert_eq!(by_user.command(&["GET", "k"]).unwrap(), bulk("shadow"));
    assert_eq!(by_name.command(&["GET", "a"]).unwrap(), bulk("1"));
    assert_eq!(live.command(&["GET", "k"]).unwrap(), bulk("live"));
    assert_eq!(
        live.command(&["EXISTS", "a", "b"]).unwrap(),
        Reply::Integer(0)
    );
    let stored = |k: &str| p.engine.get(k.as_bytes()).map(|o| o.value);
    assert_eq!(stored("__shadow__/k"), Some(Bytes::from_static(b"shadow")));
    assert_eq!(stored("__shadow__/b"), Some(Bytes::from_static(b"2")));
    assert_eq!(stored("k"), Some(Bytes::from_static(b"live")));
    // SCAN: each side sees its own keys, the shadow side without the prefix.
    let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
    assert_eq!(names(scan_all(&mut by_user, &[])), ["a", "b", "k"]);
    assert_eq!(names(scan_all(&mut by_name, &["MATCH", "k*"])), ["k"]);
    assert_eq!(names(scan_all(&mut live, &[])), ["k"]);
    // A name without the suffix makes the connection live again.
    assert_eq!(
        by_name.command(&["CLIENT", "SETNAME", "loadtest"]).unwrap(),
        ok()
    );
    assert_eq!(by_name.command(&["GET", "a"]).unwrap(), Reply::Bulk(None));
    assert_eq!(
        by_name
            .command(&["CLIENT", "SETNAME", "loadtest:shadow"])
            .unwrap(),
        ok()
    );
    assert_eq!(shadow_refusals(&p), 0);
    // Watch: reads come from live data, writes are refused.
    switch.set(ShadowMode::Watch);
    assert_eq!(by_user.command(&["GET", "k"]).unwrap(), bulk("live"));
    assert!(error_text(by_user.command(&["SET", "k", "x"]).unwrap()).starts_with("NOSHADOW"));
    assert!(error_text(by_name.command(&["DEL", "k"]).unwrap()).starts_with("NOSHADOW"));
    // Off: every data command is refused; the connection's own commands still work.
    switch.set(ShadowMode::Off);
    assert!(error_text(by_user.command(&["GET", "k"]).unwrap()).starts_with("NOSHADOW"));
    assert!(error_text(by_user.command(&["SCAN", "0"]).unwrap()).starts_with("NOSHADOW"));
    assert_eq!(
        by_user.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert_eq!(shadow_refusals(&p), 4, "every refusal is counted");
    assert_eq!(
        stored("k"),
        Some(Bytes::from_static(b"live")),
        "live data untouched"
    );
    assert_eq!(stored("__shadow__/k"), Some(Bytes::from_static(b"shadow")));
}

#[test]
fn flushdb_is_refused_unless_enabled_and_keeps_to_its_namespace() {
    let (addr, _p) = objstore_port();
    let mut c = connect(addr);
    c.command(&["SET", "k", "v"]).unwrap();
    assert!(error_text(c.command(&["FLUSHDB"]).unwrap()).contains("FLUSHDB is disabled"));
    assert_eq!(c.command(&["EXISTS", "k"]).unwrap(), Reply::Integer(1));

    let p = port(RespConfig {
        flushdb: true,
        shadow: RespShadow {
            switch: ShadowSwitch::new(ShadowMode::On),
            ..RespShadow::default()
        },
        ..RespConfig::default()
    });
    let (mut live, mut shadow) = (connect(p.addr), connect(p.addr));
    shadow.command(&["AUTH", "shadow", "x"]).unwrap();
    for i in 0..500 {
        let k = format!("k{i}");
        live.command(&["SET", k.as_str(), "v"]).unwrap();
        shadow.command(&["SET", k.as_str(), "v"]).unwrap();
    }
    assert_eq!(live.command(&["FLUSHDB"]).unwrap(), ok());
    assert_eq!(scan_all(&mut live, &[]).len(), 0);
    assert_eq!(scan_all(&mut shadow, &[]).len(), 500, "shadow keys stay");
    assert_eq!(shadow.command(&["FLUSHDB", "ASYNC"]).unwrap(), ok());
    assert_eq!(p.engine.len(), 0);
}

#[test]
fn info_and_command_answer_what_clients_ask_at_start() {
    let (addr, _p) = objstore_port();
    let mut c = connect(addr);
    c.command(&["SET", "a", "1"]).unwrap();
    c.command(&["SET", "b", "1", "EX", "100"]).unwrap();
    let info = c.command(&["INFO"]).unwrap().text().unwrap();
    for want in [
        "# Server",
        "redis_version:7.0.0",
        "# Clients\r\nconnected_clients:1",
        "# Memory",
        "used_memory_rss:",
        "# Stats",
        "total_commands_processed:",
        "db0:keys=2,expires=1,",
    ] {
        assert!(
            info.contains(&want.replace("\\r\\n", "\r\n")),
            "{want} in {info}"
        );
    }
    let keyspace = c.command(&["INFO", "keyspace"]).unwrap().text().unwrap();
    assert!(
        keyspace.starts_with("# Keyspace") && !keyspace.contains("# Server"),
        "{keyspace}"
    );
    let Reply::Integer(count) = c.command(&["COMMAND", "COUNT"]).unwrap() else {
        panic!("COMMAND COUNT")
    };
    let Reply::Array(Some(list)) = c.command(&["COMMAND", "LIST"]).unwrap() else {
        panic!("COMMAND LIST")
    };
    assert_eq!(list.len() as i64, count);
    assert!(list.contains(&bulk("scan")) && list.contains(&bulk("hello")));
    let Reply::Array(Some(info)) = c
        .command(&["COMMAND", "INFO", "get", "mset", "nosuch"])
        .unwrap()
    else {
        panic!("COMMAND INFO")
    };
    let Reply::Array(Some(get)) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(get[..2], [bulk("get"), Reply::Integer(2)]);
    assert_eq!(
        get[3..6],
        [Reply::Integer(1), Reply::Integer(1), Reply::Integer(1)]
    );
    let Reply::Array(Some(mset)) = &info[1] else {
        panic!("{info:?}")
    };
    assert_eq!(
        mset[3..6],
        [Reply::Integer(1), Reply::Integer(-1), Reply::Integer(2)]
    );
    assert_eq!(info[2], Reply::Bulk(None), "unknown: null");
    let Reply::Array(Some(docs)) = c.command(&["COMMAND", "DOCS", "get"]).unwrap() else {
        panic!("COMMAND DOCS")
    };
    assert_eq!(docs[0], bulk("get"));
    assert!(
        matches!(&docs[1], Reply::Array(Some(d)) if d.contains(&bulk("summary"))),
        "{docs:?}"
    );
}
