//! `objstore.example.toml` (the binary's embedded defaults, and the template users copy) says
//! what `ObjstoreConfig::default()` is: the two must not drift apart.

use objstore::config::ObjstoreConfig;

#[test]
fn the_example_config_is_the_default() {
    let config = jupiter_core::Config::builder()
        .file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/objstore.example.toml"
        ))
        .no_env()
        .metrics(&jupiter_core::Metrics::new())
        .build()
        .unwrap();
    let parsed: ObjstoreConfig = config.get("objstore").unwrap();
    assert!(
        parsed == ObjstoreConfig::default(),
        "objstore.example.toml:\n{parsed:?}\nObjstoreConfig::default():\n{:?}",
        ObjstoreConfig::default()
    );
    let app: jupiter_core::app::AppConfig = config.get("app").unwrap();
    assert_eq!(app.name, "objstore");
}
