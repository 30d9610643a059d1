//! Connection setup (AUTH, ACL users, SELECT, CLIENT SETNAME, URLs, config sections), shadow
//! traffic and metrics, against real redis-server.

use jupiter_core::shadow::ShadowContext;
use redis_client::{Client, ClientConfig, Error, Protocol, cmd};
use testkit::RedisServer;

fn metrics() -> jupiter_core::Metrics {
    jupiter_core::Metrics::new()
}

#[tokio::test]
async fn password_acl_user_select_and_client_name() {
    let redis = RedisServer::builder()
        .config("requirepass", "s3cret")
        .start();
    let addr = redis.addr();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let p = match protocol {
            Protocol::Resp2 => "resp2",
            Protocol::Resp3 => "resp3",
        };
        // No password: the server's NOAUTH is the error, clearly.
        let e = Client::builder()
            .url(&format!("redis://{addr}?protocol={p}"))
            .metrics(&metrics())
            .connect()
            .await
            .unwrap_err();
        let chain = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(
            chain.contains("NOAUTH") || chain.contains("authentication"),
            "{p}: {chain}"
        );
        // Wrong password.
        let e = Client::builder()
            .url(&format!("redis://:wrong@{addr}?protocol={p}"))
            .metrics(&metrics())
            .connect()
            .await
            .unwrap_err();
        let source = std::error::Error::source(&e).expect("a cause");
        assert!(source.to_string().contains("WRONGPASS"), "{p}: {source}");
        assert!(
            !e.to_string().contains("wrong"),
            "the password is never printed: {e}"
        );

        // Password, database 3 and a client name, from the URL.
        let c = Client::builder()
            .url(&format!(
                "redis://:s3cret@{addr}/3?protocol={p}&name=orders-{p}"
            ))
            .metrics(&metrics())
            .connect()
            .await
            .unwrap();
        c.set("where", "db3").await.unwrap();
        let name: String = c.query(cmd("CLIENT").arg("GETNAME")).await.unwrap();
        assert_eq!(name, format!("orders-{p}"));
        let info: String = c.query(cmd("CLIENT").arg("INFO")).await.unwrap();
        assert!(info.contains(" db=3 "), "{info}");
        assert!(
            info.contains(&format!("resp={}", if p == "resp2" { 2 } else { 3 })),
            "{info}"
        );
    }
    // The value landed in database 3 only.
    let admin = Client::builder()
        .url(&format!("redis://:s3cret@{addr}"))
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    assert_eq!(admin.get::<Option<String>>("where").await.unwrap(), None);
    // An ACL user with its own password, and limited rights.
    let _: () = admin
        .query(
            cmd("ACL")
                .arg("SETUSER")
                .arg("alice")
                .arg("on")
                .arg(">alice-pw")
                .arg("~app:*")
                .arg("+@all"),
        )
        .await
        .unwrap();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let config = ClientConfig {
            url: format!("redis://{addr}"),
            username: Some("alice".into()),
            password: Some("alice-pw".into()),
            protocol,
            ..ClientConfig::default()
        };
        let alice = Client::builder()
            .config(config)
            .metrics(&metrics())
            .connect()
            .await
            .unwrap();
        let who: String = alice.query(cmd("ACL").arg("WHOAMI")).await.unwrap();
        assert_eq!(who, "alice");
        alice.set("app:1", "ok").await.unwrap();
        let e = alice.set("other", "no").await.unwrap_err();
        assert_eq!(e.server_code(), Some("NOPERM"), "{e}");
        let e = Client::builder()
            .config(ClientConfig {
                url: format!("redis://alice:nope@{addr}"),
                protocol,
                ..ClientConfig::default()
            })
            .metrics(&metrics())
            .connect()
            .await
            .unwrap_err();
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("WRONGPASS"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn urls_and_config_sections() {
    let redis = RedisServer::start();
    let toml = format!(
        r#"
[redis.main]
url = "{}/2"
pool-size = 2
command-timeout = "1500ms"
protocol = "resp3"
client-name = "from-config"
shadow-prefix = "shadow:"
"#,
        redis.url()
    );
    let config = app_config(toml);
    let c = Client::from_config(&config, "main").await.unwrap();
    assert_eq!(c.config().pool_size, Some(2));
    assert_eq!(
        c.config().command_timeout,
        std::time::Duration::from_millis(1500)
    );
    let name: String = c.query(cmd("CLIENT").arg("GETNAME")).await.unwrap();
    assert_eq!(name, "from-config");
    let info: String = c.query(cmd("CLIENT").arg("INFO")).await.unwrap();
    assert!(info.contains(" db=2 ") && info.contains("resp=3"), "{info}");
    // The section's shadow prefix is in force: a write under a shadow context lands in
    // `shadow:`, the live key is untouched.
    c.set("cfg:k", "live").await.unwrap();
    ShadowContext::scope(Some(ShadowContext::new()), async {
        c.set("cfg:k", "shadow").await.unwrap();
    })
    .await;
    let raw = Client::builder()
        .url(&format!("{}/2", redis.url()))
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    assert_eq!(raw.get::<String>("cfg:k").await.unwrap(), "live");
    assert_eq!(raw.get::<String>("shadow:cfg:k").await.unwrap(), "shadow");

    // A bad section names the key and where it came from: the configuration's own error
    // is kept as the source (not flattened into a string), file and line included.
    let bad = app_config("[redis.main]\npool-size = \"four\"\n");
    let e = Client::from_config(&bad, "main").await.unwrap_err();
    assert!(
        matches!(e, redis_client::Error::ConfigSection { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "redis config section redis.main");
    let source = std::error::Error::source(&e).expect("the config error is kept");
    let config_error = source
        .downcast_ref::<jupiter_core::config::ConfigError>()
        .expect("a jupiter_core ConfigError");
    let msg = chain(&e);
    assert!(
        msg.contains("pool-size") && msg.contains("app.toml:2"),
        "{msg} ({config_error:?})"
    );
    let bad = app_config("[redis.main]\npool-sise = 4\n");
    let e = Client::from_config(&bad, "main").await.unwrap_err();
    assert!(chain(&e).contains("pool-sise"), "{}", chain(&e));

    // Invalid URLs and values are refused before connecting, without echoing passwords.
    for (url, needle) in [
        ("http://h:1", "scheme"),
        ("redis://h:notaport", "port"),
        ("redis://h:1/x", "database"),
        ("redis://:hunter2@h:1?protocol=resp9", "protocol"),
        ("redis://h:1?unknown=1", "unknown"),
    ] {
        let e = ClientConfig::from_url(url)
            .and_then(|c| c.validate())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.to_lowercase().contains(needle), "{url}: {msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    let zero = ClientConfig {
        pool_size: Some(0),
        ..ClientConfig::default()
    };
    assert!(
        zero.validate()
            .unwrap_err()
            .to_string()
            .contains("pool-size")
    );
}

#[tokio::test]
async fn shadow_traffic_never_touches_live_keys() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::builder()
        .url(&url)
        .shadow_prefix("shadow:")
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    // Live data first.
    client.set("user:1", "live").await.unwrap();
    client.hset("cart:1", &[("item", "live")]).await.unwrap();
    client.rpush("queue", &["live"]).await.unwrap();
    let live_before: Vec<(String, String)> = snapshot(&client).await;

    let shadow = Some(ShadowContext::new().with_run_id("run-42"));
    ShadowContext::scope(shadow.clone(), async {
        // Reads see the shadow key space: nothing there yet.
        assert_eq!(client.get::<Option<String>>("user:1").await.unwrap(), None);
        client.set("user:1", "shadow").await.unwrap();
        assert_eq!(client.get::<String>("user:1").await.unwrap(), "shadow");
        client.mset(&[("a", "1"), ("b", "2")]).await.unwrap();
        client.hset("cart:1", &[("item", "shadow")]).await.unwrap();
        client.rpush("queue", &["shadow"]).await.unwrap();
        client.rename("a", "a2").await.unwrap();
        let _: i64 = client
            .eval(
                "return redis.call('INCR', KEYS[1])",
                &["ctr"],
                &[] as &[&str],
            )
            .await
            .unwrap();
        let mut p = client.pipeline();
        p.add(redis_client::cmds::set("piped", 1))
            .add(redis_client::cmds::incr("piped"));
        let _: ((), i64) = p.query().await.unwrap();
        let mut tx = client.transaction();
        tx.add(redis_client::cmds::set("tx", 1));
        let _: Option<((),)> = tx.query().await.unwrap();
        // A blocking pop on a dedicated connection is mapped too.
        let popped = client
            .blpop::<String>(&["queue"], std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(popped, Some(("shadow:queue".into(), "shadow".into())));
        // SCAN stays in the shadow key space and strips the prefix.
        use futures::TryStreamExt;
        let mut keys: Vec<bytes::Bytes> = client.scan(None, None).try_collect().await.unwrap();
        keys.sort();
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        assert_eq!(
            keys,
            [
                &b"a2"[..],
                b"b",
                b"cart:1",
                b"ctr",
                b"piped",
                b"tx",
                b"user:1"
            ]
        );
        // Spawned work keeps the tag.
        let c = client.clone();
        jupiter_core::shadow::spawn(async move { c.set("spawned", 1).await })
            .await
            .unwrap()
            .unwrap();
    })
    .await;

    // Live keys are untouched, shadow keys are all prefixed.
    assert_eq!(snapshot(&client).await, live_before);
    let all: Vec<String> = client.query(cmd("KEYS").arg("*")).await.unwrap();
    let mut shadow_keys: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|k| k.starts_with("shadow:"))
        .collect();
    shadow_keys.sort_unstable();
    assert_eq!(
        shadow_keys,
        [
            "shadow:a2",
            "shadow:b",
            "shadow:cart:1",
            "shadow:ctr",
            "shadow:piped",
            "shadow:spawned",
            "shadow:tx",
            "shadow:user:1"
        ]
    );
    assert_eq!(all.len(), shadow_keys.len() + 3, "{all:?}");

    // Without a shadow prefix, shadow requests are refused before anything is sent.
    let strict = Client::builder()
        .url(&url)
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let calls_before = command_calls(&strict).await;
    ShadowContext::scope(shadow, async {
        let e = strict.set("user:1", "oops").await.unwrap_err();
        assert!(matches!(e, Error::ShadowRefused(_)), "{e:?}");
        assert!(e.to_string().contains("no shadow target"), "{e}");
        let e = strict.get::<Option<String>>("user:1").await.unwrap_err();
        assert!(matches!(e, Error::ShadowRefused(_)), "{e:?}");
        let mut p = strict.pipeline();
        p.add(redis_client::cmds::set("user:1", "oops"));
        assert!(matches!(
            p.query::<()>().await,
            Err(Error::ShadowRefused(_))
        ));
    })
    .await;
    assert_eq!(
        command_calls(&strict).await,
        calls_before + 1,
        "only our INFO reached the server"
    );
    assert_eq!(strict.get::<String>("user:1").await.unwrap(), "live");
}

/// Commands the generated table does not know get their key positions from the server's
/// `COMMAND INFO` (here: commands the server renamed); commands whose keys cannot all be
/// mapped, and commands the server does not know, are refused under shadow traffic before
/// anything is sent. Live keys stay untouched throughout.
#[tokio::test]
async fn shadow_learns_unknown_commands_and_refuses_unmappable_ones() {
    let redis = RedisServer::builder()
        .config_words("rename-command", &["SET", "PUTVAL"])
        // (HSET's reply depends on its name's second letter: HMSET answers OK.)
        .config_words("rename-command", &["HSET", "HSTORE"])
        .start();
    let client = Client::builder()
        .url(&redis.url())
        .shadow_prefix("shadow:")
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let _: () = client
        .query(cmd("PUTVAL").arg("user:1").arg("live"))
        .await
        .unwrap();
    let _: () = client
        .query(cmd("PUTVAL").arg("list:1").arg("live"))
        .await
        .unwrap();
    let shadow = Some(ShadowContext::new());
    ShadowContext::scope(shadow.clone(), async {
        // Learned from COMMAND INFO, then mapped like any known command.
        let _: () = client
            .query(cmd("PUTVAL").arg("user:1").arg("shadow"))
            .await
            .unwrap();
        // In a pipeline and a transaction too (learned when they are sent).
        let mut p = client.pipeline();
        p.add(cmd("HSTORE").arg("cart:1").arg("item").arg("shadow"))
            .add(redis_client::cmds::get("user:1"));
        let (_, v): (i64, String) = p.query().await.unwrap();
        assert_eq!(v, "shadow");
        let mut tx = client.transaction();
        tx.add(cmd("HSTORE").arg("cart:2").arg("item").arg("shadow"));
        let r: Option<(i64,)> = tx.query().await.unwrap();
        assert_eq!(r, Some((1,)));

        // Refused, with the command and the reason, and nothing sent (NOSUCHCMD costs one
        // COMMAND INFO, which finds nothing).
        let calls_before = command_calls(&client).await;
        for (c, reason) in [
            (cmd("FLUSHDB"), "whole keyspace"),
            (cmd("KEYS").arg("*"), "whole keyspace"),
            (cmd("RANDOMKEY"), "whole keyspace"),
            (
                cmd("SORT").arg("list:1").arg("STORE").arg("dst"),
                "cannot be found",
            ),
            (cmd("NOSUCHCMD").arg("user:1"), "does not describe it"),
        ] {
            let e = client
                .query::<redis_client::resp::Frame>(c)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::ShadowUnmappable { .. }), "{e:?}");
            assert!(e.to_string().contains(reason), "{e}");
        }
        let mut p = client.pipeline();
        p.add(cmd("FLUSHALL"));
        assert!(matches!(
            p.query::<()>().await,
            Err(Error::ShadowUnmappable { .. })
        ));
        assert_eq!(
            command_calls(&client).await,
            calls_before + 2,
            "only COMMAND INFO NOSUCHCMD and our INFO reached the server"
        );
    })
    .await;

    // Live data is as it was; everything shadow is under the prefix.
    assert_eq!(
        client.get::<String>("user:1").await.unwrap(),
        "live",
        "a learned command wrote a live key"
    );
    let mut all: Vec<String> = client.query(cmd("KEYS").arg("*")).await.unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            "list:1",
            "shadow:cart:1",
            "shadow:cart:2",
            "shadow:user:1",
            "user:1"
        ]
    );
}

/// Every live key with its value, sorted.
async fn snapshot(c: &Client) -> Vec<(String, String)> {
    let mut out = vec![
        ("user:1".into(), c.get::<String>("user:1").await.unwrap()),
        (
            "cart:1".into(),
            c.hget::<String>("cart:1", "item").await.unwrap(),
        ),
    ];
    let q: Vec<String> = c.lrange("queue", 0, -1).await.unwrap();
    out.push(("queue".into(), q.join(",")));
    out
}

/// The server's count of commands processed (INFO stats), itself one command.
async fn command_calls(c: &Client) -> u64 {
    let info = c.info(Some("stats")).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

#[tokio::test]
async fn per_command_metrics_with_bounded_codes() {
    let redis = RedisServer::start();
    let registry = metrics();
    let c = Client::builder()
        .url(&redis.url())
        .name("orders")
        .metrics(&registry)
        .connect()
        .await
        .unwrap();
    for _ in 0..5 {
        c.set("k", "a value that must never show up").await.unwrap();
    }
    let _: Option<String> = c.get("k").await.unwrap();
    let _ = c.hget::<Option<String>>("k", "f").await.unwrap_err();
    let _ = c.query::<()>(cmd("NOSUCH").arg("x")).await.unwrap_err();
    let text = registry.encode();
    let peer = redis.addr().to_string();
    let line = |method: &str, code: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("client_handle_total")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(line("SET", "OK"), Some(5.0), "{text}");
    assert_eq!(line("GET", "OK"), Some(1.0), "{text}");
    assert_eq!(line("HGET", "WRONGTYPE"), Some(1.0), "{text}");
    assert!(text.contains("name=\"orders\""), "{text}");
    assert!(text.contains(&format!("peer=\"{peer}\"")), "{text}");
    assert!(text.contains("type=\"redis\""), "{text}");
    assert!(text.contains("client_handle_seconds_bucket"), "{text}");
    // Unknown commands share one series; no value or message text becomes a label.
    assert!(!text.contains("NOSUCH"), "{text}");
    assert!(!text.contains("never show up"), "{text}");
    assert!(!text.contains("unknown command"), "{text}");
}

#[tokio::test]
async fn metrics_off_records_nothing() {
    let redis = RedisServer::start();
    let registry = metrics();
    let toml = format!(
        "[redis.quiet]\nurl = \"{}\"\nmetrics = false\n",
        redis.url()
    );
    let config = app_config(toml);
    let section: ClientConfig = config.get("redis.quiet").unwrap();
    assert!(!section.metrics);
    let c = Client::builder()
        .config(section)
        .metrics(&registry)
        .connect()
        .await
        .unwrap();
    for _ in 0..5 {
        c.set("k", "v").await.unwrap();
    }
    let text = registry.encode();
    assert!(!text.contains("client_handle_total{"), "{text}");
    // The same registry with metrics on does record: the check above can fail.
    let on = Client::builder()
        .url(&redis.url())
        .metrics(&registry)
        .connect()
        .await
        .unwrap();
    on.set("k", "v").await.unwrap();
    assert!(registry.encode().contains("client_handle_total{"));
}

#[tokio::test]
async fn a_zero_command_timeout_waits_as_long_as_the_server_takes() {
    let redis = RedisServer::start();
    let toml = format!(
        "[redis.patient]\nurl = \"{}\"\ncommand-timeout = \"0s\"\n",
        redis.url()
    );
    let config = app_config(toml);
    let c = Client::from_config(&config, "patient").await.unwrap();
    assert_eq!(c.timeout(), None, "0s means no deadline");
    c.set("k", "v").await.unwrap();
    // The server stops; the clock is then paused, so tokio jumps straight to the next timer
    // whenever the runtime idles: any deadline on the call (the default is 10 s) would fire
    // at once. An hour of virtual time passes and the call still waits.
    redis.pause();
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.get::<String>("k").await })
    };
    tokio::time::pause();
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    assert!(!call.is_finished(), "the call gave up without a deadline");
    tokio::time::resume();
    redis.resume();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .expect("answered once the server runs")
        .unwrap()
        .unwrap();
    assert_eq!(got, "v");
}

/// A configuration of `toml` alone (as `app.toml`, no environment).
fn app_config(toml: impl Into<String>) -> jupiter_core::Config {
    jupiter_core::Config::builder()
        .toml("app.toml", toml.into())
        .no_env()
        .build()
        .unwrap()
}

/// The error and its sources, as a CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
