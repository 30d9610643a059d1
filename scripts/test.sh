#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (redis-server, redis-cli,
# etcd, protoc, through apt-get), then runs the gates and every test, doc tests included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh

# A clean clone gains nothing from incremental compilation, and its caches about double the size
# of target/ (CI's disk ran out once). Export CARGO_INCREMENTAL=1 to keep them locally.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

ensure_tools protoc redis-server redis-cli redis-benchmark etcd etcdctl

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --all-features --locked --no-fail-fast "$@"
# The benchmarks, each run once on tiny sizes (criterion's test mode), so a broken one fails
# here rather than at the next person's `cargo bench`.
echo "== cargo test --benches (smoke)" >&2
cargo test --workspace --all-features --locked --no-fail-fast --benches "$@"
# What --all-features hides: redis-client without `tls` refuses TLS by name (its unit tests,
# built once without features).
echo "== cargo test -p redis-client --lib (no features)" >&2
cargo test -p redis-client --lib --locked --no-fail-fast "$@"
# The redis-rs feature alone, as a user enables it: the workspace's dev-dependencies must not be
# what makes it compile (it once needed redis-rs's tokio-comp from them).
echo "== cargo check -p redis-client --features redis-rs" >&2
cargo check -p redis-client --lib --features redis-rs --locked
