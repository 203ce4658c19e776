#!/usr/bin/env bash
# scopegate's side-by-side benchmark (BENCHMARKS.md). One command:
#
#   bash bench/run.sh              # full run: 5 interleaved rounds, 10 s each (about 15 minutes)
#   ROUNDS=2 DUR=5 bash bench/run.sh   # quicker
#
# Everything runs on loopback on this machine, in one run and interleaved, so the figures are ratios
# measured under the same conditions. Modes:
#   direct      load generator -> upstream (sgbench, a tiny hyper server, 1 KiB body)
#   nginx       -> Debian nginx, plain proxy_pass with upstream keep-alive, worker_processes = WORKERS
#   sg_full     -> scopegate, WORKERS threads, doing full work: ES256 JWT (token cache on), openclaw
#                  profile headers, policy, EdDSA assertion (default 1 s reuse)
#   sg_fresh    -> the same with a freshly signed assertion on every request (reuse = 0)
#   sg_first    -> the same with the token cache off: every request verifies its ES256 JWT ("first sight")
# Results: bench/results/<timestamp>/results.jsonl and summary.md (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-10}
WORKERS=${WORKERS:-2}
CONC=${CONC:-32}
RATE=${RATE:-2000}
WS_IDLE=${WS_IDLE:-10000}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/scopegate-bench.XXXXXX)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

log() { printf '[bench] %s\n' "$*" >&2; }
emit() { echo "$1" >> "$RESULTS"; }

# --- tools -----------------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v oha >/dev/null || { log "installing oha (cargo)"; cargo install oha --locked --quiet; }
log "building release binaries"
cargo build --release --quiet -p scopegate -p scopegate-bench
SG=$ROOT/target/release/scopegate
SB=$ROOT/target/release/sgbench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- keys, tokens, configs ---------------------------------------------------------------------
"$SB" keys --dir "$WORK"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience openclaw --out "$WORK/token.txt"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 4000 --issuer https://idp.bench --audience openclaw --out "$WORK/tokens.txt"
TOKEN=$(cat "$WORK/token.txt")

UP=127.0.0.1:18180
sg_config_for() { # name port cache_size reuse
  SG_LISTEN=127.0.0.1:$2 SG_UPSTREAM=$UP SG_WORKERS=$WORKERS SG_MAX_CONN=65536 SG_CACHE=$3 SG_REUSE=$4 \
    sg_config "$WORK/$1.toml"
}
sg_config_for sg_full 18181 100000 1s
sg_config_for sg_fresh 18185 100000 0s
sg_config_for sg_first 18183 0 1s
sg_config_for sg_ws 18184 100000 1s

cat > "$WORK/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 65536; }
http {
  access_log off;
  client_body_temp_path $WORK/nb; proxy_temp_path $WORK/np; fastcgi_temp_path $WORK/nf; uwsgi_temp_path $WORK/nu; scgi_temp_path $WORK/ns;
  upstream backend { server $UP; keepalive 256; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:18182 reuseport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /ws { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$connection_upgrade; proxy_read_timeout 3600s; }
    location /sse-bench { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF

cat > "$WORK/first-sight.lua" <<'EOF'
-- Each wrk thread walks its own slice of distinct tokens (the proxy's cache is off anyway).
local tokens, n, i, step = {}, 0, 0, 1
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
init = function(args)
  for line in io.lines(args[1]) do n = n + 1; tokens[n] = line end
  i = (tid or 1) - 1; step = 2
end
request = function()
  i = (i + step) % n
  return wrk.format("GET", "/v1/models", { ["Authorization"] = "Bearer " .. tokens[i + 1] })
end
EOF

# --- processes ---------------------------------------------------------------------------------
"$SB" upstream --listen $UP --body-bytes 1024 --threads 1 2>/dev/null & PIDS+=($!)
nginx -c "$WORK/nginx.conf"
start_sg() { (cd "$WORK" && exec "$SG" --log-format json run --config "$WORK/$1.toml" 2>>"$WORK/$1.log") & PIDS+=($!); eval "PID_$1=$!"; }
start_sg sg_full; start_sg sg_fresh; start_sg sg_first
wait_port() { for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$1/healthz" -H "Authorization: Bearer $TOKEN" && return 0; sleep 0.05; done; log "port $1 did not come up"; exit 1; }
for p in 18180 18181 18182 18183 18185; do wait_port $p; done
for p in 18181 18182 18183 18185; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v1/models" -H "Authorization: Bearer $TOKEN")
  [ "$code" = 200 ] || { log "port $p answers $code"; exit 1; }
done
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
emit "{\"kind\":\"memory\",\"what\":\"idle_rss_kib\",\"value\":$(rss_kib "$PID_sg_full")}"

port_of() { case $1 in direct) echo 18180;; nginx) echo 18182;; sg_full) echo 18181;; sg_first) echo 18183;; sg_fresh) echo 18185;; esac; }
# CPU a proxy spent (user and system, clock ticks from /proc/<pid>/stat, summed over its processes):
# per request it is steadier than throughput on a shared machine, and says where the time went.
CLK_TCK=$(getconf CLK_TCK)
proxy_pids() { case $1 in nginx) pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ';; sg_full) echo "$PID_sg_full";; sg_fresh) echo "$PID_sg_fresh";; sg_first) echo "$PID_sg_first";; esac; }
cpu_ticks() { local u=0 s=0 a b p; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }

# --- throughput at fixed concurrency, interleaved ----------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  for mode in direct nginx sg_full sg_fresh sg_first; do
    port=$(port_of $mode)
    pids=$(proxy_pids $mode)
    [ -n "$pids" ] && read -r u0 s0 < <(cpu_ticks $pids)
    if [ $mode = sg_first ]; then
      out=$(wrk -t2 -c"$CONC" -d"${DUR}s" -s "$WORK/first-sight.lua" "http://127.0.0.1:$port/v1/models" -- "$WORK/tokens.txt")
    else
      # RSS of scopegate sampled while it is under load.
      sampler=""
      if [ $mode = sg_full ]; then
        ( peak=0; for _ in $(seq 1 $((DUR*4))); do v=$(rss_kib "$PID_sg_full"); if [ "$v" -gt "$peak" ]; then peak=$v; fi; sleep 0.25; done; echo "$peak" > "$WORK/peak_rss" ) &
        sampler=$!
      fi
      out=$(wrk -t2 -c"$CONC" -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models")
      if [ -n "$sampler" ]; then
        wait "$sampler"
        emit "{\"kind\":\"memory\",\"what\":\"load_rss_kib\",\"round\":$r,\"value\":$(cat "$WORK/peak_rss")}"
      fi
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    log "round $r $mode: $rps rps $errs"
    emit "{\"kind\":\"throughput\",\"mode\":\"$mode\",\"round\":$r,\"rps\":$rps,\"errors\":\"$errs\"}"
    if [ -n "$pids" ]; then
      read -r u1 s1 < <(cpu_ticks $pids)
      n=$(echo "$out" | awk '/requests in/ {print $1}')
      emit "{\"kind\":\"cpu\",\"mode\":\"$mode\",\"round\":$r,\"requests\":$n,\"user_ticks\":$((u1 - u0)),\"sys_ticks\":$((s1 - s0)),\"clk_tck\":$CLK_TCK}"
    fi
  done
done

# --- latency at a fixed rate, interleaved ------------------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  for mode in direct nginx sg_full; do
    port=$(port_of $mode)
    j=$(oha -z "${DUR}s" -q "$RATE" -c "$CONC" --latency-correction --no-tui --output-format json \
        -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models")
    p50=$(echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["latencyPercentiles"]["p50"]*1e6)')
    p99=$(echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["latencyPercentiles"]["p99"]*1e6)')
    ok=$(echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["summary"]["successRate"])')
    log "latency round $r $mode: p50 ${p50}us p99 ${p99}us success $ok"
    emit "{\"kind\":\"latency\",\"mode\":\"$mode\",\"round\":$r,\"p50_us\":$p50,\"p99_us\":$p99,\"success\":$ok}"
  done
done

# --- SSE: upstream write -> client read, per event size ----------------------------------------
for pad in 0 4096 65536; do
  for r in $(seq 1 "$ROUNDS"); do
    for mode in direct nginx sg_full; do
      port=$(port_of $mode)
      j=$("$SB" sse --url "http://127.0.0.1:$port/sse-bench" --events 200 --interval-ms 5 --pad $pad --header "Authorization: Bearer $TOKEN")
      emit "{\"kind\":\"sse\",\"mode\":\"$mode\",\"pad\":$pad,\"round\":$r,\"result\":$j}"
    done
  done
  log "sse pad $pad done"
done

# --- WebSocket relay throughput ---------------------------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  for mode in direct nginx sg_full; do
    port=$(port_of $mode)
    j=$("$SB" ws-throughput --url "ws://127.0.0.1:$port/ws" --seconds "$DUR" --connections "$CONC" --header "Authorization: Bearer $TOKEN")
    emit "{\"kind\":\"ws\",\"mode\":\"$mode\",\"round\":$r,\"result\":$j}"
  done
done
log "websocket throughput done"

# --- memory with many idle WebSockets (fresh instance) --------------------------------------------
# Each proxied WebSocket holds two descriptors in scopegate (client and upstream side); a container
# whose hard limit cannot be raised caps how many fit.
fd_cap=$(( ($(ulimit -n) - 256) / 2 ))
if [ "$WS_IDLE" -gt "$fd_cap" ]; then
  log "open-file limit $(ulimit -n) allows $fd_cap proxied WebSockets, not $WS_IDLE: measuring $fd_cap"
  WS_IDLE=$fd_cap
fi
start_sg sg_ws; wait_port 18184
before=$(rss_kib "$PID_sg_ws")
coproc IDLE { "$SB" ws-idle --url "ws://127.0.0.1:18184/ws" --count "$WS_IDLE" --header "Authorization: Bearer $TOKEN"; }
read -r line <&"${IDLE[0]}"
after=$(rss_kib "$PID_sg_ws")
emit "{\"kind\":\"ws_idle\",\"count\":$WS_IDLE,\"opened\":$line,\"rss_before_kib\":$before,\"rss_after_kib\":$after}"
exec {IDLE[1]}>&-
wait "$IDLE_PID" 2>/dev/null || true
log "idle websockets: ${before} KiB -> ${after} KiB for $WS_IDLE sockets"

python3 "$ROOT/bench/summarize.py" "$RESULTS" "$WORKERS" "$CONC" "$RATE" > "$OUT/summary.md"
cat "$OUT/summary.md"
