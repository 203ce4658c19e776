#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind, for scopegate (full work, one worker) and
# nginx (plain proxy_pass, one worker), against the same upstream and the same request:
#
#   bash bench/callgrind.sh            # about two minutes; needs valgrind, wrk, nginx
#   SG_BASELINE=/tmp/scopegate-old bash bench/callgrind.sh   # also count another build, same run
#
# Instruction counts do not depend on how busy the machine is, so this is the figure to compare code
# changes by; BENCHMARKS.md's "Where the throughput goes" comes from it (add --dump-instr=yes to the
# valgrind line and use callgrind_annotate for a per-function breakdown).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
for tool in valgrind callgrind_control wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh needs $tool" >&2; exit 1; }
done
cargo build --release --quiet -p scopegate -p scopegate-bench
SG=$ROOT/target/release/scopegate
SB=$ROOT/target/release/sgbench
WORK=$(mktemp -d /tmp/scopegate-callgrind.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$SB" keys --dir "$WORK"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience openclaw --out "$WORK/token.txt"
TOKEN=$(cat "$WORK/token.txt")
UP=127.0.0.1:18280
SG_LISTEN=127.0.0.1:18281 SG_UPSTREAM=$UP SG_WORKERS=1 sg_config "$WORK/sg.toml"
# The same with [limits] off: what the abuse limits cost on the cached-token path.
SG_LISTEN=127.0.0.1:18283 SG_UPSTREAM=$UP SG_WORKERS=1 SG_LIMITS='enabled = false' sg_config "$WORK/sg-nolimits.toml"
cat > "$WORK/nginx.conf" <<EOT
worker_processes 1;
master_process off;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nb; proxy_temp_path $WORK/np; fastcgi_temp_path $WORK/nf; uwsgi_temp_path $WORK/nu; scgi_temp_path $WORK/ns;
  upstream backend { server $UP; keepalive 64; }
  server {
    listen 127.0.0.1:18282;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOT
"$SB" upstream --listen "$UP" --body-bytes 1024 --threads 1 2>/dev/null & PIDS+=($!)

wait_port() {
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$1/v1/models" -H "Authorization: Bearer $TOKEN" && return 0
    sleep 0.1
  done
  echo "port $1 did not come up" >&2; exit 1
}

# measure NAME PORT COMMAND...: warm up uninstrumented, then count 10 s of wrk -c32.
measure() {
  local name=$1 port=$2; shift 2
  (cd "$WORK" && exec valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/$name.cg" "$@" 2>"$WORK/$name.log") & local pid=$!
  wait_port "$port"
  wrk -t1 -c32 -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local n
  n=$(wrk -t1 -c32 -d10s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models" | awk '/requests in/{print $1}')
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local total
  total=$(cat "$WORK/$name".cg* | awk '/^totals:/{s+=$2} END{print s+0}')
  echo "$name: $n requests, $total instructions, $((total / n)) per request"
}

wait_port "${UP##*:}" 2>/dev/null || true
measure scopegate 18281 "$SG" --log-format json run --config "$WORK/sg.toml"
measure scopegate_limits_off 18283 "$SG" --log-format json run --config "$WORK/sg-nolimits.toml"
if [ -n "${SG_BASELINE:-}" ]; then
  # Another build (for instance the commit before a change) with the same configs, in the same run.
  measure baseline 18281 "$SG_BASELINE" --log-format json run --config "$WORK/sg.toml"
  measure baseline_limits_off 18283 "$SG_BASELINE" --log-format json run --config "$WORK/sg-nolimits.toml"
  measure scopegate_again 18281 "$SG" --log-format json run --config "$WORK/sg.toml"
fi
measure nginx 18282 nginx -c "$WORK/nginx.conf"
