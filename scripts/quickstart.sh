#!/usr/bin/env bash
# The main job on embedded defaults, no external server needed: a ten-second load test against
# an objstore that loadtest starts in its own process (loadtest/scenarios/quickstart.toml).
# Installs protoc (needed by the build: etcd-client compiles etcd's .proto files) when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh

ensure_tools protoc
mkdir -p target/loadtest
exec cargo run --release --locked -p loadtest -- run loadtest/scenarios/quickstart.toml "$@"
