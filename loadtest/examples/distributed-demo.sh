#!/usr/bin/env bash
# A coordinated run by hand, on loopback: a throwaway etcd, python3's http.server as the target
# (a staging copy: `live = false`, so no shadow probe), three `loadtest worker`s registered in
# etcd, and a coordinator that splits 500 arrivals/s for 20 s over them.
#   cargo build -p loadtest && loadtest/examples/distributed-demo.sh          # all three finish
#   KILL=1 loadtest/examples/distributed-demo.sh    # worker 1 SIGKILLed 8 s in: exit 3, its share missing
# Needs etcd (apt-get install etcd-server) and python3.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${LOADTEST:-$root/target/debug/loadtest}"
dir="$(mktemp -d)"
cd "$dir"
cat > scenario.toml <<'TOML'
thresholds = ["error-rate < 1%"]
[run]
run-id = "dist-demo"
[targets.api]
kind = "http"
url = "http://127.0.0.1:18080"
live = false
[[scenarios]]
name = "spread"
executor = "constant-arrival-rate"
rate = 500
duration = "20s"
[[scenarios.steps]]
name = "get"
http = { method = "GET", path = "/" }
TOML
etcd --data-dir etcd-data --listen-client-urls http://127.0.0.1:12379 \
  --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
  >etcd.log 2>&1 &
pids=($!)
python3 -m http.server 18080 --bind 127.0.0.1 >http.log 2>&1 &
pids+=($!)
sleep 2
workers=()
for i in 1 2 3; do
  "$bin" worker --registry etcd://127.0.0.1:12379 --listen 127.0.0.1:0 --pool demo >"w$i.log" 2>&1 &
  workers+=($!)
done
sleep 2
"$bin" run scenario.toml --workers 3 --registry etcd://127.0.0.1:12379 --pool demo --wait 20s \
  --json report.json &
coordinator=$!
if [ "${KILL:-0}" = 1 ]; then
  sleep 8
  kill -9 "${workers[0]}"
  echo "killed worker 1" >&2
fi
wait "$coordinator"
code=$?
kill "${workers[@]}" "${pids[@]}" 2>/dev/null
wait 2>/dev/null
echo "coordinator exit $code; report: $dir/report.json"
exit "$code"
