//! The string commands' group, in a file of its own: objstore's RESP port runs this same
//! body (`objstore/tests/resp.rs` includes it), so both servers are held to one behaviour.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis_client::cmds::{Condition, Expiry, SetOptions, Ttl};
use redis_client::{Client, Error, Protocol, cmd};

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The server's clock (`TIME`), in milliseconds.
async fn server_ms(c: &Client) -> u64 {
    let (s, us) = c.time().await.unwrap();
    s * 1000 + us / 1000
}

/// Runs `set` (which gives `key` a time to live of `ttl`) and checks the expiry it left
/// against the server's clock read before and after: `PEXPIRETIME` lies between the two plus
/// `ttl`, however long the calls took. No band of wall time, so no flake on a slow machine.
pub(crate) async fn assert_expires_in<F: std::future::Future<Output = ()>>(
    c: &Client,
    key: &str,
    ttl: Duration,
    set: F,
) {
    let before = server_ms(c).await;
    set.await;
    let after = server_ms(c).await;
    let at: i64 = c.query(cmd("PEXPIRETIME").arg(key)).await.unwrap();
    let ttl = ttl.as_millis() as u64;
    let at = u64::try_from(at).unwrap_or_else(|_| panic!("{key} has no expiry ({at})"));
    assert!(
        (before + ttl..=after + ttl).contains(&at),
        "{key} expires at {at}, not within [{}, {}]",
        before + ttl,
        after + ttl
    );
    // What `ttl` reports is never more than was set.
    let left = c.ttl(key).await.unwrap().remaining().expect("expires");
    assert!(left <= Duration::from_millis(ttl), "{left:?}");
}

pub(crate) async fn strings_body(c: &Client, p: Protocol) {
    c.set("s", "hello").await.unwrap();
    assert_eq!(c.get::<String>("s").await.unwrap(), "hello", "{p:?}");
    assert_eq!(c.get::<Option<String>>("missing").await.unwrap(), None);
    assert_eq!(c.append("s", " world").await.unwrap(), 11);
    assert_eq!(c.strlen("s").await.unwrap(), 11);
    assert_eq!(c.getrange::<String>("s", 0, 4).await.unwrap(), "hello");
    assert_eq!(c.setrange("s", 6, "WORLD").await.unwrap(), 11);
    assert_eq!(c.get::<Bytes>("s").await.unwrap(), &b"hello WORLD"[..]);

    assert!(c.setnx("nx", 1).await.unwrap());
    assert!(!c.setnx("nx", 2).await.unwrap());
    let nx = SetOptions {
        condition: Some(Condition::NotExists),
        ..SetOptions::default()
    };
    let r: Option<String> = c.set_with("nx", 3, nx).await.unwrap();
    assert_eq!(r, None, "NX on an existing key is not set");
    let get = SetOptions {
        get: true,
        expiry: Some(Expiry::In(secs(100))),
        ..SetOptions::default()
    };
    assert_expires_in(c, "nx", secs(100), async {
        let old: Option<i64> = c.set_with("nx", 4, get).await.unwrap();
        assert_eq!(old, Some(1));
    })
    .await;

    assert_expires_in(c, "ex", secs(50), async {
        c.setex("ex", secs(50), "v").await.unwrap();
    })
    .await;
    assert_eq!(
        c.getex::<String>("ex", Some(Expiry::Keep)).await.unwrap(),
        "v"
    );
    assert_eq!(c.ttl("ex").await.unwrap(), Ttl::Persistent, "GETEX PERSIST");
    // A time to live Redis cannot represent is refused before anything is sent.
    let e = c.setex("ex", Duration::MAX, "v").await.unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e:?}");
    let at = SystemTime::now() + secs(3600);
    let opts = SetOptions {
        expiry: Some(Expiry::At(at)),
        ..SetOptions::default()
    };
    let _: () = c.set_with("at", "v", opts).await.unwrap();
    // An absolute expiry is the instant given, rounded up to the millisecond (never before it).
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let expected =
        (since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000))) as i64;
    let got: i64 = c.query(cmd("PEXPIRETIME").arg("at")).await.unwrap();
    assert_eq!(got, expected);

    assert_eq!(c.incr("n").await.unwrap(), 1);
    assert_eq!(c.incr_by("n", 10).await.unwrap(), 11);
    assert_eq!(c.decr("n").await.unwrap(), 10);
    assert_eq!(c.decr_by("n", 5).await.unwrap(), 5);
    assert!((c.incr_by_float("n", 0.5).await.unwrap() - 5.5).abs() < 1e-9);

    // Keys in different slots (in cluster mode: split, reassembled in order).
    c.mset(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")])
        .await
        .unwrap();
    let v: Vec<Option<i64>> = c.mget(&["a", "zz", "b", "d", "c"]).await.unwrap();
    assert_eq!(v, vec![Some(1), None, Some(2), Some(4), Some(3)]);
    assert!(c.msetnx(&[("{n}x", "1"), ("{n}y", "2")]).await.unwrap());
    assert!(!c.msetnx(&[("{n}y", "3"), ("{n}z", "4")]).await.unwrap());
    assert_eq!(c.getdel::<Option<i64>>("a").await.unwrap(), Some(1));
    assert_eq!(c.exists(&["a"]).await.unwrap(), 0);

    // Binary-safe values, including CR LF and zero bytes.
    let bin: Vec<u8> = (0..=255u8).chain(b"\r\n\0".iter().copied()).collect();
    c.set("bin", bin.as_slice()).await.unwrap();
    assert_eq!(c.get::<Vec<u8>>("bin").await.unwrap(), bin);

    let e = c.incr("s").await.unwrap_err();
    assert_eq!(e.server_code(), Some("ERR"), "{e}");
}
