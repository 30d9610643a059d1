//! Configuration loading: files, environment overrides, error messages, reload semantics.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use jupiter_core::config::types::{ByteSize, duration};
use jupiter_core::config::{Config, DynamicEntry, DynamicLayer, ErrorKind, ReloadOutcome};
use jupiter_core::{Error, Metrics};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
struct RedisSection {
    url: String,
    pool_size: u32,
    #[serde(with = "duration")]
    timeout: Duration,
    nodes: Vec<String>,
    max_value: ByteSize,
    // A key that really has an underscore in it.
    #[serde(rename = "key_prefix")]
    key_prefix: String,
    password: String,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 4,
            timeout: Duration::from_secs(1),
            nodes: Vec::new(),
            max_value: ByteSize(1 << 20),
            key_prefix: String::new(),
            password: String::new(),
        }
    }
}

const APP_TOML: &str = r#"# test config
[app]
name = "orders"

[redis.main]
url = "redis://:hunter2@10.0.0.1:6379/0"
pool-size = 8
timeout = "250ms"
password = "s3cret"
"#;

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// The configuration of the file at `path` alone (no environment).
fn from_file(path: impl Into<std::path::PathBuf>, metrics: &Metrics) -> Config {
    Config::builder()
        .file(path)
        .no_env()
        .metrics(metrics)
        .build()
        .unwrap()
}

fn load(text: &str, env: &[(&str, &str)]) -> (tempfile::NamedTempFile, Result<Config, Error>) {
    let f = write_file(text);
    let config = Config::builder()
        .file(f.path())
        .env_vars(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .metrics(&Metrics::new())
        .build();
    (f, config)
}

/// Loads `text` with `env` and reads `[redis.main]`, which must fail: the error.
fn main_error(text: &str, env: &[(&str, &str)]) -> (tempfile::NamedTempFile, Error) {
    let (f, config) = load(text, env);
    let err = config
        .unwrap()
        .get::<RedisSection>("redis.main")
        .unwrap_err();
    (f, err)
}

fn name(f: &tempfile::NamedTempFile) -> String {
    f.path().display().to_string()
}

#[test]
fn file_values_reach_typed_sections() {
    let (_f, config) = load(APP_TOML, &[]);
    let redis: RedisSection = config.unwrap().get("redis.main").unwrap();
    assert_eq!(redis.pool_size, 8);
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.max_value, ByteSize(1 << 20), "default kept");
}

#[test]
fn unknown_key_names_file_line_column_and_suggests() {
    let (f, err) = main_error(&format!("{APP_TOML}pool-sise = 3\n"), &[]);
    assert_eq!(
        err.to_string(),
        format!(
            "{}:10:1: redis.main.pool-sise: unknown key; did you mean \"pool-size\"?",
            name(&f)
        )
    );
    assert!(matches!(
        err.as_config().unwrap().kind(),
        ErrorKind::UnknownKey { .. }
    ));
}

#[test]
fn wrong_type_names_file_line_column_and_key() {
    let (f, err) = main_error(
        &APP_TOML.replace("pool-size = 8", "pool-size = \"eight\""),
        &[],
    );
    let err = err.to_string();
    assert_eq!(
        err,
        format!(
            "{}:7:1: redis.main.pool-size: invalid type: string \"eight\", expected u32",
            name(&f)
        )
    );
    let (f, err) = main_error(&APP_TOML.replace("\"250ms\"", "\"soon\""), &[]);
    let err = err.to_string();
    assert!(
        err.starts_with(&format!(
            "{}:8:1: redis.main.timeout: invalid duration \"soon\"",
            name(&f)
        )),
        "{err}"
    );
}

#[test]
fn toml_syntax_error_names_the_position() {
    let (f, config) = load("[redis.main]\npool-size = = 3\n", &[]);
    let err = config.unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2:", name(&f))), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn missing_file_names_the_file() {
    let err = Config::builder()
        .file("/nonexistent/jupiter.toml")
        .no_env()
        .metrics(&Metrics::new())
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/jupiter.toml: cannot read config file"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("No such file"), "{source}");
    // An optional file may be missing.
    Config::builder()
        .optional_file("/nonexistent/jupiter.toml")
        .no_env()
        .metrics(&Metrics::new())
        .build()
        .unwrap();
}

#[test]
fn env_overrides_every_key_spelling() {
    let (_f, config) = load(
        APP_TOML,
        &[
            // In the file, with a dash.
            ("JUPITER_REDIS__MAIN__POOL_SIZE", "16"),
            // Not in the file, with an underscore in the real key.
            ("JUPITER_REDIS__MAIN__KEY_PREFIX", "orders:"),
            // Not in the file, with a dash in the real key, a size and a list.
            ("JUPITER_REDIS__MAIN__MAX_VALUE", "4MiB"),
            ("JUPITER_REDIS__MAIN__NODES", "a:1, b:2"),
            // Other prefixes are ignored.
            ("OTHER_REDIS__MAIN__POOL_SIZE", "99"),
        ],
    );
    let redis: RedisSection = config.unwrap().get("redis.main").unwrap();
    assert_eq!(redis.pool_size, 16);
    assert_eq!(redis.key_prefix, "orders:");
    assert_eq!(redis.max_value, ByteSize(4 << 20));
    assert_eq!(redis.nodes, vec!["a:1".to_string(), "b:2".to_string()]);
}

#[test]
fn env_can_create_whole_sections_and_toml_values() {
    let (_f, config) = load(
        APP_TOML,
        &[("JUPITER_REDIS__CACHE__NODES", "[\"x:1\", \"y:2\"]")],
    );
    let redis: RedisSection = config.unwrap().get("redis.cache").unwrap();
    assert_eq!(redis.nodes, vec!["x:1".to_string(), "y:2".to_string()]);
}

#[test]
fn bad_env_override_names_the_variable() {
    let (_f, err) = main_error(APP_TOML, &[("JUPITER_REDIS__MAIN__POOL_SIZE", "lots")]);
    let err = err.to_string();
    assert_eq!(
        err,
        "environment variable JUPITER_REDIS__MAIN__POOL_SIZE: redis.main.pool-size: invalid value: expected a non-negative integer, found \"lots\""
    );

    let (_f, config) = load(APP_TOML, &[("JUPITER_REDIS____POOL", "1")]);
    let err = config.unwrap_err().to_string();
    assert!(
        err.starts_with("environment variable JUPITER_REDIS____POOL: cannot map to a key"),
        "{err}"
    );

    // Replacing a whole table with a scalar is refused, not a silent drop.
    let (f, config) = load(APP_TOML, &[("JUPITER_REDIS", "x")]);
    let err = config.unwrap_err().to_string();
    assert!(
        err.starts_with("environment variable JUPITER_REDIS: redis: cannot replace a table"),
        "{err}"
    );
    assert!(
        err.contains(&name(&f)),
        "names where the table came from: {err}"
    );

    let (_f, err) = main_error(APP_TOML, &[("JUPITER_REDIS__MAIN__UNKNOWN_THING", "1")]);
    let err = err.to_string();
    assert_eq!(
        err,
        "environment variable JUPITER_REDIS__MAIN__UNKNOWN_THING: redis.main.unknown-thing: unknown key"
    );
}

#[test]
fn effective_config_redacts_secrets() {
    let (f, config) = load(APP_TOML, &[("JUPITER_REDIS__MAIN__AUTH_TOKEN", "abc")]);
    let json = config.unwrap().effective(true);
    let main = &json["redis"]["main"];
    assert_eq!(main["password"]["value"], "<redacted>");
    assert_eq!(main["auth-token"]["value"], "<redacted>");
    assert_eq!(main["url"]["value"], "redis://:<redacted>@10.0.0.1:6379/0");
    assert_eq!(main["pool-size"]["value"], 8);
    assert_eq!(main["pool-size"]["from"], format!("{}:7:1", name(&f)));
    assert_eq!(
        main["auth-token"]["from"],
        "environment variable JUPITER_REDIS__MAIN__AUTH_TOKEN"
    );
    let text = json.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret") && !text.contains("\"abc\""),
        "{text}"
    );
}

#[test]
fn committed_example_config_parses() {
    let config = from_file(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        &Metrics::new(),
    );
    let app: jupiter_core::app::AppConfig = config.get("app").unwrap();
    assert_eq!(app, jupiter_core::app::AppConfig::default());
    let gov: jupiter_core::governance::GovernanceConfig = config.get("governance").unwrap();
    assert_eq!(gov, jupiter_core::governance::GovernanceConfig::default());
    let log: jupiter_core::logging::LogConfig = config.get("log").unwrap();
    assert_eq!(log, jupiter_core::logging::LogConfig::default());
    let registry: jupiter_core::registry::RegistryConfig = config.get("registry").unwrap();
    assert_eq!(registry, jupiter_core::registry::RegistryConfig::default());
    let shadow: jupiter_core::shadow::ShadowConfig = config.get("shadow").unwrap();
    assert_eq!(shadow, jupiter_core::shadow::ShadowConfig::default());
}

fn layer(entries: &[(&str, &str)]) -> DynamicLayer {
    DynamicLayer {
        source: Arc::from("test"),
        entries: entries
            .iter()
            .map(|(k, v)| DynamicEntry {
                key: format!("/cfg/{k}"),
                path: k.to_string(),
                value: v.to_string(),
                document: false,
            })
            .collect(),
    }
}

#[test]
fn reload_swaps_whole_tree_and_notifies_only_changed_sections() {
    let metrics = Metrics::new();
    let f = write_file(APP_TOML);
    let config = from_file(f.path(), &metrics);
    let mut main = config.subscribe::<RedisSection>("redis.main").unwrap();
    let mut app = config.subscribe::<toml::Table>("app").unwrap();
    main.mark_unchanged();
    app.mark_unchanged();

    let out = config
        .apply(&layer(&[("redis.main.pool-size", "32")]))
        .unwrap();
    assert_eq!(
        out,
        ReloadOutcome::Applied {
            changed_sections: 1
        }
    );
    assert!(main.has_changed().unwrap());
    assert!(!app.has_changed().unwrap(), "app section did not change");
    assert_eq!(main.borrow_and_update().pool_size, 32);

    // Same content again: nothing to do.
    assert_eq!(
        config
            .apply(&layer(&[("redis.main.pool-size", "32")]))
            .unwrap(),
        ReloadOutcome::Unchanged
    );
    assert!(!main.has_changed().unwrap());

    // The key disappears from the source: the file's value applies again.
    config.apply(&layer(&[])).unwrap();
    assert_eq!(main.borrow_and_update().pool_size, 8);
    assert_eq!(
        config.get::<RedisSection>("redis.main").unwrap().pool_size,
        8
    );

    // A key only the source had disappears entirely.
    config
        .apply(&layer(&[("redis.main.key_prefix", "p:")]))
        .unwrap();
    assert_eq!(main.borrow_and_update().key_prefix, "p:");
    config.apply(&layer(&[])).unwrap();
    assert_eq!(main.borrow_and_update().key_prefix, "");
    assert!(
        !config.effective(false)["redis"]["main"]
            .as_object()
            .unwrap()
            .contains_key("key_prefix")
    );
}

#[test]
fn invalid_reload_is_rejected_whole_and_counted() {
    let metrics = Metrics::new();
    let f = write_file(APP_TOML);
    let config = from_file(f.path(), &metrics);
    let mut main = config
        .subscribe_validated::<RedisSection, _>("redis.main", |r| {
            if r.pool_size == 0 {
                Err("pool-size must be at least 1".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    main.mark_unchanged();

    // Changed type: an error, not a silent drop; the other (valid) key of the same reload is not
    // applied either.
    let err = config
        .apply(&layer(&[
            ("app.name", "new"),
            ("redis.main.pool-size", "many"),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "test key /cfg/redis.main.pool-size: redis.main.pool-size: invalid value: expected a non-negative integer, found \"many\""
    );
    assert_eq!(config.get::<String>("app.name").unwrap(), "orders");
    assert!(!main.has_changed().unwrap());

    // Validation failure.
    let err = config
        .apply(&layer(&[("redis.main.pool-size", "0")]))
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("redis.main: rejected: pool-size must be at least 1"),
        "{err}"
    );
    assert_eq!(main.borrow().pool_size, 8);
    assert_eq!(config.last_reload_error().unwrap(), err.to_string());

    // Table replaced by a scalar.
    let err = config.apply(&layer(&[("redis", "gone")])).unwrap_err();
    assert!(err.to_string().contains("cannot replace a table"), "{err}");

    let text = metrics.encode();
    assert!(
        text.contains("config_reload_total{source=\"test\",result=\"rejected\"} 3"),
        "{text}"
    );

    config
        .apply(&layer(&[("redis.main.pool-size", "9")]))
        .unwrap();
    assert_eq!(main.borrow().pool_size, 9);
    assert!(config.last_reload_error().is_none());
    assert!(
        metrics
            .encode()
            .contains("config_reload_total{source=\"test\",result=\"applied\"} 1")
    );
}

#[test]
fn two_dynamic_keys_for_one_path_are_a_conflict() {
    let f = write_file(APP_TOML);
    let config = from_file(f.path(), &Metrics::new());
    let err = config
        .apply(&layer(&[
            ("redis.main.pool-size", "1"),
            ("redis/main/pool_size", "2"),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "test key /cfg/redis/main/pool_size: redis.main.pool_size: also set by test key /cfg/redis.main.pool-size"
    );
}

#[test]
fn dynamic_toml_documents_merge_at_the_root() {
    let f = write_file(APP_TOML);
    let config = from_file(f.path(), &Metrics::new());
    let doc = DynamicLayer {
        source: Arc::from("test"),
        entries: vec![DynamicEntry {
            key: "/cfg/app.toml".into(),
            path: String::new(),
            value: "[redis.main]\npool-size = 12\n\n[redis.main.bogus]\n".into(),
            document: true,
        }],
    };
    config.apply(&doc).unwrap();
    // No subscriber for redis.main, so the bad key surfaces on read, with the position inside
    // the dynamic document.
    let err = config
        .get::<RedisSection>("redis.main")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "test key /cfg/app.toml:4:13: redis.main.bogus: unknown key"
    );
}
