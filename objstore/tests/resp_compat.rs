//! The RESP port answers as redis-server does: the same commands, sent to a real redis-server
//! and to objstore's port one after the other, must get equal replies (error texts included),
//! under RESP2 and RESP3. Only what the two cannot agree on by design is left out (server
//! names, versions, ids, `DBSIZE` with shadow keys, `FLUSHDB`'s default refusal).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use objstore::engine::{Engine, EngineConfig};
use objstore::resp::{RespConfig, serve};
use testkit::resp::{Conn, Reply};

/// objstore's RESP port on its own thread's runtime (the blocking testkit client drives it).
fn objstore_port() -> (SocketAddr, std::sync::mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let engine = Engine::new(EngineConfig::default());
            let metrics = jupiter_core::Metrics::new();
            let stop = tokio::task::spawn_blocking(move || {
                let _ = stop_rx.recv();
            });
            serve(engine, listener, RespConfig::default(), &metrics, async {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
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
