#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind, for scopegate (full work, one worker; audit
# line off, and on) and nginx (plain proxy_pass, one worker; access log off, and bench/run.sh's
# buffered JSON access log), and the relay floor (a byte pump, no HTTP), against the same upstream
# and the same request:
#
#   bash bench/callgrind.sh            # about two minutes; needs valgrind, wrk, nginx
#   SG_BASELINE=/tmp/scopegate-old bash bench/callgrind.sh   # also count another build, same run
#   SG_SCALE=1 bash bench/callgrind.sh  # also the same request under a small config (3 routes, 3 API
#                                       # tokens, 3 grants, 1 key) and a large one (1 000 routes,
#                                       # 10 000 API tokens, 1 000 grants, a 50-key JWT key set)
#
# Instruction counts do not depend on how busy the machine is, so this is the figure to compare code
# changes by; BENCHMARKS.md's "Where the throughput goes" comes from it (add --dump-instr=yes to the
# valgrind line and use callgrind_annotate for a per-function breakdown).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
need_tools callgrind.sh valgrind callgrind_control wrk nginx curl
build_bench_binaries
# WORK stays, with the profiles in it, for callgrind_annotate.
WORK=$(mktemp -d /tmp/scopegate-callgrind.XXXXXX)
kill_pids_on_exit

"$SB" keys --dir "$WORK"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience openclaw --out "$WORK/token.txt"
TOKEN=$(cat "$WORK/token.txt")
UP=127.0.0.1:18280
SG_LISTEN=127.0.0.1:18281 SG_UPSTREAM=$UP SG_WORKERS=1 sg_config "$WORK/sg.toml"
# scale_toml DIR KEYS TOKENS GRANTS ROUTES: extra tables for a config of that size. The request under
# test (GET /v1/models with the "bench" key's token) matches the last route, and its key is the first
# of KEYS.
scale_toml() {
  local dir=$1 keys=$2 tokens=$3 grants=$4 routes=$5 i
  for i in $(seq 1 $((keys - 1))); do
    "$SB" keys --dir "$dir/k$i" >/dev/null
    python3 - "$dir/k$i/idp-es256.jwk" "k$i" <<'PY'
import json, sys
path, kid = sys.argv[1], sys.argv[2]
jwk = json.load(open(path)); jwk["kid"] = kid
json.dump(jwk, open(path, "w"))
PY
    printf '[[jwt.keys]]\nkid = "k%d"\nalgorithm = "ES256"\njwk_file = "k%d/idp-es256.jwk"\n' "$i" "$i"
  done
  for i in $(seq 1 "$tokens"); do
    printf '[[api_tokens]]\nsubject = "bot-%d"\nsha256 = "%064x"\nscopes = ["operator.read"]\n' "$i" "$i"
  done
  for i in $(seq 1 "$grants"); do
    printf '[[grants]]\nsubjects = ["person-%d@example.com"]\ngroups = ["team-%d"]\nscopes = ["operator.read"]\n' "$i" "$i"
  done
  for i in $(seq 1 $((routes - 1))); do
    printf '[[routes]]\npath = "/scale/route-%d"\nrequire = ["operator.write"]\n' "$i"
  done
  printf '[[routes]]\npath = "/v1/models"\nmethods = ["GET"]\nrequire = ["operator.read"]\n'
}
if [ -n "${SG_SCALE:-}" ]; then
  SG_LISTEN=127.0.0.1:18284 SG_UPSTREAM=$UP SG_WORKERS=1 SG_EXTRA_TOML="$(scale_toml "$WORK" 50 10000 1000 1000)" sg_config "$WORK/sg-scale.toml"
  SG_LISTEN=127.0.0.1:18285 SG_UPSTREAM=$UP SG_WORKERS=1 SG_EXTRA_TOML="$(scale_toml "$WORK" 1 3 3 3)" sg_config "$WORK/sg-small.toml"
fi
# scopegate's default config with its audit line (to a file, stderr redirected), the like-for-like
# peer of nginx with a JSON access log below.
SG_LISTEN=127.0.0.1:18286 SG_UPSTREAM=$UP SG_WORKERS=1 SG_AUDIT=1 sg_config "$WORK/sg-audit.toml"
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
# nginx with bench/run.sh's buffered JSON access log (the nginx_log mode).
sed -e 's|^  access_log off;|  log_format json escape=json '"'"'{"time":"$time_iso8601","request_id":"$request_id","client":"$remote_addr","method":"$request_method","path":"$uri","status":$status,"request_time_s":$request_time,"upstream_time_s":"$upstream_response_time","upstream_status":"$upstream_status","bytes":$body_bytes_sent}'"'"';\n  access_log '"$WORK"'/nginx-access.log json buffer=64k flush=1s;|' \
  -e 's|18282|18287|' -e 's|nginx.pid|nginx-log.pid|' "$WORK/nginx.conf" > "$WORK/nginx-log.conf"
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
measure scopegate_audit 18286 "$SG" --log-format json run --config "$WORK/sg-audit.toml"
if [ -n "${SG_SCALE:-}" ]; then
  measure scale_small 18285 "$SG" --log-format json run --config "$WORK/sg-small.toml"
  measure scale_large 18284 "$SG" --log-format json run --config "$WORK/sg-scale.toml"
  measure scale_small_again 18285 "$SG" --log-format json run --config "$WORK/sg-small.toml"
  measure scale_large_again 18284 "$SG" --log-format json run --config "$WORK/sg-scale.toml"
fi
if [ -n "${SG_BASELINE:-}" ]; then
  # Another build (for instance the commit before a change) with the same configs, in the same run.
  # Keys the older build does not know yet are left out: `people = "shared"` is what it always did.
  for f in sg sg-nolimits; do sed '/^people = /d' "$WORK/$f.toml" > "$WORK/$f-baseline.toml"; done
  measure baseline 18281 "$SG_BASELINE" --log-format json run --config "$WORK/sg-baseline.toml"
  measure baseline_limits_off 18283 "$SG_BASELINE" --log-format json run --config "$WORK/sg-nolimits-baseline.toml"
  measure scopegate_again 18281 "$SG" --log-format json run --config "$WORK/sg.toml"
fi
measure nginx 18282 nginx -c "$WORK/nginx.conf"
# The floor: bench/run.sh's relay row, one event loop copying bytes with no HTTP at all.
measure relay 18288 "$SB" relay --listen 127.0.0.1:18288 --upstream "$UP" --threads 1
measure nginx_access_log 18287 nginx -c "$WORK/nginx-log.conf"
