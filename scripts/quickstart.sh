#!/usr/bin/env bash
# The main job on embedded defaults, no external server needed. Installs protoc (needed by the
# build: etcd-client compiles etcd's .proto files) when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh

ensure_tools protoc
exec cargo run --release --locked -p jupiter-core --bin jupiter -- demo "$@"
