//! Build facts for the governance server's `/build/info`: who built it, where, when, and with
//! which compiler. Run again only when these inputs change, so an incremental build stays
//! incremental (the time is of the build script's last run).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["USER", "SOURCE_DATE_EPOCH", "JUPITER_BUILD_HOST"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let user = std::env::var("USER").unwrap_or_default();
    let host = std::env::var("JUPITER_BUILD_HOST")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    // Reproducible builds set SOURCE_DATE_EPOCH; otherwise now.
    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default()
    });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    for (key, value) in [
        ("JUPITER_BUILD_USER", user),
        ("JUPITER_BUILD_HOST", host),
        ("JUPITER_BUILD_EPOCH", epoch),
        ("JUPITER_RUSTC_VERSION", version),
    ] {
        // One line each: a value with a newline would end the directive early.
        let value = value.lines().next().unwrap_or("").trim().to_owned();
        println!("cargo:rustc-env={key}={value}");
    }
}
