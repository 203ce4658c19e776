#!/usr/bin/env bash
# scopegate's side-by-side benchmark (BENCHMARKS.md). One command:
#
#   bash bench/run.sh                  # full run: 5 interleaved rounds, 10 s per window (about 20 minutes of load windows)
#   ROUNDS=2 DUR=5 bash bench/run.sh   # quicker
#   ROUNDS=1 DUR=2 WS_IDLE=0 bash bench/run.sh   # smoke run: every mode once, no idle-WebSocket part
#
# Everything runs on loopback on this machine, in one run and interleaved round by round, so the
# figures are ratios measured under the same conditions.
#
# The headline is CPU per request: user + system time of the proxy's own processes (every nginx or
# HAProxy process, master included; scopegate's one process, all its threads), read from
# /proc/<pid>/stat before and after each load window and divided by the requests wrk completed in it,
# with requests/s beside it. The proxies forward to a fast upstream, so that none of them is capped by
# it: a separate Debian nginx (worker_processes 1, `return 200` with a fixed 1 KiB body, keep-alive)
# or `sgbench upstream --threads UP_THREADS`, whichever answers more requests/s in a short direct probe
# at the start of the run (FAST_UPSTREAM=nginx|sgbench skips the probe).
#
# Throughput modes (wrk -t2 -cCONC, GET /v1/models with the bench's ES256 bearer token):
#   direct             load generator -> the fast upstream, no proxy
#   relay              (RELAY_ROW=0 drops it) `sgbench relay`: WORKERS tokio event loops copying bytes
#                      between each client socket and an upstream socket of its own, no HTTP at all;
#                      the floor of CPU per request any tokio proxy pays on this kernel's loopback path
#   nginx              Debian nginx, plain proxy_pass, upstream keep-alive, access_log off, WORKERS workers
#   nginx_log          the same with a buffered JSON access log (time, request id, client, method, path,
#                      status, durations; `access_log FILE json buffer=64k flush=1s`)
#   haproxy            Debian HAProxy, plain forwarding, no log, nbthread WORKERS: the fastest peer
#                      that authenticates nothing
#   haproxy_jwt        HAProxy doing JWT work: jwt_verify ES256 against the public key scopegate's config
#                      uses, alg/iss/aud/exp checked (exp against date()), 401 otherwise, 403 without
#                      operator.read, user and scopes headers set from the claims. Verifies every request.
#   haproxy_jwt_cached the same, with verified tokens remembered in a stick table (HAPROXY_CACHED=0 drops it)
#   sg_full            scopegate's default config, WORKERS threads: ES256 JWT (token cache on), openclaw
#                      profile headers, policy, EdDSA assertion (1 s reuse), one audit line per request to
#                      a file (stderr redirected), the like-for-like peer of nginx_log
#   sg_noaudit         the same with `[log] audit = false`, the like-for-like peer of nginx
#   sg_fresh           sg_noaudit with a freshly signed assertion on every request (reuse = 0)
#   sg_first           sg_noaudit with the token cache off: every request verifies its ES256 JWT (4 000
#                      distinct tokens), the like-for-like peer of haproxy_jwt
#   sg_limits_off      sg_full's config with `[limits] enabled = false` (LIMITS_ROW=0 drops it): the
#                      cost of the abuse limits is sg_full against this row. Every other scopegate mode
#                      keeps the limits on, with request rates set above what one load generator sends.
#   ub_direct, ub_nginx, ub_sg  (UPSTREAM_BOUND=1) the old headline: the one-thread sgbench upstream,
#                      directly, through nginx and through scopegate (sg_noaudit's config), "upstream-bound"
# Latency at RATE requests/s (oha, LAT_MODES) runs against the fast upstream too. SSE, WebSocket echo
# and idle-WebSocket memory run, as before, against the one-thread sgbench upstream (it has those
# endpoints): direct, nginx and a scopegate instance with sg_noaudit's config. WS_IDLE=0 skips the
# idle-WebSocket memory part.
#
# Before any load, a smoke test checks that every mode answers the bench token with 200, that
# HAProxy's jwt_verify really verifies the ES256 token (a forged, a wrong-issuer, a wrong-audience and
# an expired token get 401, a token without operator.read 403), that scopegate refuses the same forged
# and wrong-issuer tokens, and that sg_full and nginx_log write their log lines; the run stops if not.
#
# Knobs: ROUNDS DUR WORKERS CONC RATE WS_IDLE UP_THREADS FAST_UPSTREAM PROBE_DUR WARMUP (seconds of
#        unrecorded load per mode before round 1) HAPROXY_CACHED LIMITS_ROW UPSTREAM_BOUND RELAY_ROW
#        MODES (throughput modes, space-separated) LAT_MODES (empty: no latency section) OUT.
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
UP_THREADS=${UP_THREADS:-2}
FAST_UPSTREAM=${FAST_UPSTREAM:-auto}
PROBE_DUR=${PROBE_DUR:-3}
WARMUP=${WARMUP:-1}
HAPROXY_CACHED=${HAPROXY_CACHED:-1}
LIMITS_ROW=${LIMITS_ROW:-1}
UPSTREAM_BOUND=${UPSTREAM_BOUND:-0}
RELAY_ROW=${RELAY_ROW:-1}
# Each round runs every mode once. The like-for-like pairs run back to back (nginx next to
# sg_noaudit, nginx_log next to sg_full, haproxy_jwt next to sg_first), and every second round runs
# the list backwards (see `round_order`), so that the host drifting during a round weighs on both
# sides of each ratio alike instead of on whichever mode happens to come later.
DEFAULT_MODES="direct"
[ "$RELAY_ROW" = 1 ] && DEFAULT_MODES+=" relay"
DEFAULT_MODES+=" nginx sg_noaudit nginx_log sg_full haproxy haproxy_jwt sg_first"
[ "$HAPROXY_CACHED" = 1 ] && DEFAULT_MODES+=" haproxy_jwt_cached"
DEFAULT_MODES+=" sg_fresh"
[ "$LIMITS_ROW" = 1 ] && DEFAULT_MODES+=" sg_limits_off"
[ "$UPSTREAM_BOUND" = 1 ] && DEFAULT_MODES+=" ub_direct ub_nginx ub_sg"
MODES=${MODES:-$DEFAULT_MODES}
LAT_MODES=${LAT_MODES-direct nginx sg_noaudit nginx_log sg_full haproxy haproxy_jwt}
# The modes in round $1's order: as listed in odd rounds, backwards in even ones.
round_order() {
  local r=$1; shift
  if [ $((r % 2)) = 0 ]; then printf '%s\n' "$@" | tac | tr '\n' ' '; else echo "$@"; fi
}
# A mode named in MODES or LAT_MODES gets its instance started.
case " $MODES $LAT_MODES " in *" sg_limits_off "*) LIMITS_ROW=1;; esac
case " $MODES $LAT_MODES " in *" haproxy_jwt_cached "*) HAPROXY_CACHED=1;; esac
JWT_MODES=haproxy_jwt
[ "$HAPROXY_CACHED" = 1 ] && JWT_MODES+=" haproxy_jwt_cached"
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/scopegate-bench.XXXXXX)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
PIDS=()
PIDFILES=()
unset RUST_LOG  # the configs' [log] level decides what scopegate logs

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "${PIDFILES[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }
emit() { echo "$1" >> "$RESULTS"; }

# --- tools -----------------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  # Keep the packages' own services from starting (and taking ports) on install.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v oha >/dev/null || { log "installing oha (cargo)"; cargo install oha --locked --quiet; }
log "building release binaries"
build_bench_binaries
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
emit "{\"kind\":\"versions\",\"nginx\":\"$(nginx -v 2>&1 | sed 's/.*nginx\///')\",\"haproxy\":\"$(haproxy -v | awk 'NR==1 {print $3}')\",\"workers\":$WORKERS,\"conc\":$CONC,\"dur_s\":$DUR,\"rounds\":$ROUNDS}"

# --- keys, tokens ------------------------------------------------------------------------------
"$SB" keys --dir "$WORK"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience openclaw --out "$WORK/token.txt"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 4000 --issuer https://idp.bench --audience openclaw --out "$WORK/tokens.txt"
TOKEN=$(cat "$WORK/token.txt")
# HAProxy reads a PEM public key: derive it from the same key pair and check it is the key of the JWK
# scopegate's config trusts.
openssl pkey -in "$WORK/idp-es256.pem" -pubout -out "$WORK/idp-es256.pub.pem" 2>/dev/null
python3 - "$WORK" <<'PY' || die "HAProxy's public key is not the JWK scopegate uses"
import base64, json, subprocess, sys
d = sys.argv[1]
der = subprocess.run(["openssl", "pkey", "-pubin", "-in", f"{d}/idp-es256.pub.pem", "-outform", "DER"],
                     capture_output=True, check=True).stdout
jwk = json.load(open(f"{d}/idp-es256.jwk"))
b = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
sys.exit(0 if der[-65:] == b"\x04" + b(jwk["x"]) + b(jwk["y"]) else 1)
PY
# Tokens the smoke test must see refused.
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://other.idp --audience openclaw --out "$WORK/bad-iss.txt"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience other --out "$WORK/bad-aud.txt"
"$SB" tokens --key "$WORK/idp-es256.pem" --count 1 --issuer https://idp.bench --audience openclaw --scope "unrelated.scope" --out "$WORK/no-read.txt"
"$SG" token --key "$WORK/idp-es256.pem" --alg ES256 --kid bench --issuer https://idp.bench --audience openclaw \
  --sub user-x --scope operator.read --ttl 0s > "$WORK/expired.txt" 2>/dev/null || : > "$WORK/expired.txt"
FORGED="${TOKEN%??????}AAAAAA"  # the same header and claims, a broken signature

# --- upstreams ---------------------------------------------------------------------------------
SLOW_UP=127.0.0.1:18180     # one-thread sgbench: SSE, WebSocket, the upstream-bound rows
NGX_UP_PORT=18190           # nginx, worker_processes 1, fixed 1 KiB body
SB_UP_PORT=18191            # sgbench --threads UP_THREADS
"$SB" upstream --listen $SLOW_UP --body-bytes 1024 --threads 1 2>/dev/null & SLOW_UP_PID=$!; PIDS+=($SLOW_UP_PID)

BODY=$(head -c 1024 /dev/zero | tr '\0' x)
nginx_common() { # name: the lines every nginx instance here shares
  cat <<EOF
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
worker_rlimit_nofile $NOFILE;
EOF
}
nginx_temp() { echo "client_body_temp_path $WORK/$1-b; proxy_temp_path $WORK/$1-p; fastcgi_temp_path $WORK/$1-f; uwsgi_temp_path $WORK/$1-u; scgi_temp_path $WORK/$1-s;"; }
start_nginx() { nginx -c "$WORK/$1.conf" || die "nginx $1 did not start ($(tail -3 "$WORK/$1-error.log" 2>/dev/null))"; PIDFILES+=("$WORK/$1.pid"); }

if [ "$FAST_UPSTREAM" != sgbench ]; then
  cat > "$WORK/upstream-nginx.conf" <<EOF
worker_processes 1;
$(nginx_common upstream-nginx)
events { worker_connections $((NOFILE - 64)); }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  $(nginx_temp upstream-nginx)
  server {
    listen 127.0.0.1:$NGX_UP_PORT backlog=4096;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
EOF
  start_nginx upstream-nginx
fi
if [ "$FAST_UPSTREAM" != nginx ]; then
  "$SB" upstream --listen 127.0.0.1:$SB_UP_PORT --body-bytes 1024 --threads "$UP_THREADS" 2>/dev/null & SB_UP_PID=$!; PIDS+=($SB_UP_PID)
fi

wait_http() { # port [pid]: until the port answers HTTP; stops the run if the process behind it died
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$1/healthz" -H "Authorization: Bearer $TOKEN" && return 0
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
    sleep 0.05
  done
  return 1
}
wrk_rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
up_ports=${SLOW_UP##*:}
[ "$FAST_UPSTREAM" != sgbench ] && up_ports+=" $NGX_UP_PORT"
[ "$FAST_UPSTREAM" != nginx ] && up_ports+=" $SB_UP_PORT"
for p in $up_ports; do wait_http "$p" || die "upstream on port $p did not come up"; done

CLK_TCK=$(getconf CLK_TCK)
# CPU (user and system, clock ticks from /proc/<pid>/stat, summed over the processes).
cpu_ticks() { local u=0 s=0 a b p; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
# Choose the faster upstream, measured directly (two alternating short windows each, best kept; the
# upstream's own CPU per request is recorded beside it).
if [ "$FAST_UPSTREAM" = auto ]; then
  best_ngx=0; best_sb=0; cpu_ngx=(); cpu_sb=()
  for _ in 1 2; do
    for cand in nginx sgbench; do
      if [ $cand = nginx ]; then port=$NGX_UP_PORT; ps_=$(cat "$WORK/upstream-nginx.pid"); ps_="$ps_ $(pgrep -P "$ps_" | tr '\n' ' ')"
      else port=$SB_UP_PORT; ps_=$SB_UP_PID; fi
      # shellcheck disable=SC2086
      read -r a0 b0 < <(cpu_ticks $ps_)
      o=$(wrk -t2 -c"$CONC" -d"${PROBE_DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models")
      # shellcheck disable=SC2086
      read -r a1 b1 < <(cpu_ticks $ps_)
      v=$(wrk_rps "$o"); v=${v:-0}; n=$(awk '/requests in/ {print $1}' <<<"$o"); n=${n:-1}
      c=$(python3 -c "print(round(($a1 + $b1 - $a0 - $b0) / $CLK_TCK * 1e6 / max($n, 1), 2))")
      if [ $cand = nginx ]; then best_ngx=$(python3 -c "print(max($best_ngx, $v))"); cpu_ngx+=("$c")
      else best_sb=$(python3 -c "print(max($best_sb, $v))"); cpu_sb+=("$c"); fi
    done
  done
  FAST_UPSTREAM=$(python3 -c "print('nginx' if $best_ngx >= $best_sb else 'sgbench')")
  log "fast upstream probe: nginx (1 worker) $best_ngx rps (${cpu_ngx[*]} us CPU per request), sgbench ($UP_THREADS threads) $best_sb rps (${cpu_sb[*]} us): using $FAST_UPSTREAM"
  emit "{\"kind\":\"upstream\",\"chosen\":\"$FAST_UPSTREAM\",\"probe_s\":$PROBE_DUR,\"nginx_rps\":$best_ngx,\"sgbench_rps\":$best_sb,\"sgbench_threads\":$UP_THREADS,\"nginx_cpu_us\":[$(IFS=,; echo "${cpu_ngx[*]}")],\"sgbench_cpu_us\":[$(IFS=,; echo "${cpu_sb[*]}")]}"
  # Stop the one not chosen, so that it takes nothing from the run.
  if [ "$FAST_UPSTREAM" = nginx ]; then kill "$SB_UP_PID"; wait "$SB_UP_PID" 2>/dev/null || true
  else kill "$(cat "$WORK/upstream-nginx.pid")"; fi
else
  emit "{\"kind\":\"upstream\",\"chosen\":\"$FAST_UPSTREAM\",\"sgbench_threads\":$UP_THREADS}"
fi
if [ "$FAST_UPSTREAM" = nginx ]; then
  FAST_UP=127.0.0.1:$NGX_UP_PORT; upstream_pids() { echo "$(cat "$WORK/upstream-nginx.pid") $(pgrep -P "$(cat "$WORK/upstream-nginx.pid")" | tr '\n' ' ')"; }
else
  FAST_UP=127.0.0.1:$SB_UP_PORT; upstream_pids() { echo "$SB_UP_PID"; }
fi

# --- proxy configs -----------------------------------------------------------------------------
sg_config_for() { # name port upstream cache_size reuse [audit] [limits body]
  SG_LISTEN=127.0.0.1:$2 SG_UPSTREAM=$3 SG_WORKERS=$WORKERS SG_MAX_CONN=65536 SG_CACHE=$4 SG_REUSE=$5 \
    SG_AUDIT=${6:-0} SG_LIMITS=${7:-} sg_config "$WORK/$1.toml"
}
sg_config_for sg_full 18181 $FAST_UP 100000 1s 1
sg_config_for sg_noaudit 18189 $FAST_UP 100000 1s
sg_config_for sg_fresh 18185 $FAST_UP 100000 0s
sg_config_for sg_first 18183 $FAST_UP 0 1s
sg_config_for sg_limits_off 18192 $FAST_UP 100000 1s 1 'enabled = false'
sg_config_for sg_stream 18193 $SLOW_UP 100000 1s
sg_config_for sg_ws 18184 $SLOW_UP 100000 1s

# nginx: keep-alive both ways, without nginx's default limit of 1 000 requests per connection (no
# other proxy here closes connections after N requests).
cat > "$WORK/nginx.conf" <<EOF
worker_processes $WORKERS;
$(nginx_common nginx)
events { worker_connections $((NOFILE - 64)); }
http {
  access_log off;
  keepalive_requests 1000000;
  $(nginx_temp nginx)
  upstream backend { server $FAST_UP; keepalive 256; keepalive_requests 1000000; }
  upstream slow { server $SLOW_UP; keepalive 256; keepalive_requests 1000000; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:18182 reuseport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /ws { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$connection_upgrade; proxy_read_timeout 3600s; }
    location /sse-bench { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
  server {
    # upstream-bound row: the same proxy in front of the one-thread upstream
    listen 127.0.0.1:18188 reuseport;
    location / { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
cat > "$WORK/nginx_log.conf" <<EOF
worker_processes $WORKERS;
$(nginx_common nginx_log)
events { worker_connections $((NOFILE - 64)); }
http {
  log_format json escape=json '{"time":"\$time_iso8601","request_id":"\$request_id","client":"\$remote_addr",'
    '"method":"\$request_method","path":"\$uri","status":\$status,"request_time_s":\$request_time,'
    '"upstream_time_s":"\$upstream_response_time","upstream_status":"\$upstream_status","bytes":\$body_bytes_sent}';
  access_log $WORK/nginx_log-access.log json buffer=64k flush=1s;
  keepalive_requests 1000000;
  $(nginx_temp nginx_log)
  upstream backend { server $FAST_UP; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:18186 reuseport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

# HAProxy: one process, WORKERS threads. maxconn fits the open-file limit (HAProxy needs two
# descriptors per connection and refuses to start otherwise).
HAPROXY_MAXCONN=$(( (NOFILE - 200) / 2 ))
haproxy_head() { # name
  cat <<EOF
global
  nbthread $WORKERS
  maxconn $HAPROXY_MAXCONN
  pidfile $WORK/$1.pid
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 20s
  timeout http-keep-alive 60s
backend fast
  server up $FAST_UP
EOF
}
# The JWT rules: header and claims are read by HAProxy's JSON queries, the signature checked with
# jwt_verify (ES256, the PEM public key). $1 = 1 adds the verified-token cache (stick table keyed by
# the token's SHA-256; a hit skips jwt_verify, the claim checks still run on every request).
haproxy_jwt_rules() {
  local deny401="http-request deny status 401 content-type application/json string"
  cat <<EOF
  $deny401 '{"error":"no bearer token"}' unless { req.hdr(authorization) -m beg "Bearer " }
  http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('\$.alg')
  $deny401 '{"error":"alg"}' unless { var(txn.alg) -m str ES256 }
  http-request set-var(txn.iss) http_auth_bearer,jwt_payload_query('\$.iss')
  $deny401 '{"error":"iss"}' unless { var(txn.iss) -m str https://idp.bench }
  http-request set-var(txn.aud) http_auth_bearer,jwt_payload_query('\$.aud')
  $deny401 '{"error":"aud"}' unless { var(txn.aud) -m str openclaw }
  http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  $deny401 '{"error":"exp"}' unless { var(txn.exp),sub(txn.now) -m int gt 0 }
EOF
  if [ "$1" = 1 ]; then
    cat <<EOF
  http-request set-var(txn.tokh) http_auth_bearer,sha2(256)
  http-request set-var(txn.hit) var(txn.tokh),table_gpt0(jwt_cache)
  http-request set-var(txn.sig) http_auth_bearer,jwt_verify(txn.alg,"$WORK/idp-es256.pub.pem") unless { var(txn.hit) -m int 1 }
  $deny401 '{"error":"signature"}' unless { var(txn.hit) -m int 1 } || { var(txn.sig) -m int 1 }
  http-request track-sc0 var(txn.tokh) table jwt_cache unless { var(txn.hit) -m int 1 }
  http-request sc-set-gpt0(0) 1 unless { var(txn.hit) -m int 1 }
EOF
  else
    echo "  $deny401 '{\"error\":\"signature\"}' unless { http_auth_bearer,jwt_verify(txn.alg,\"$WORK/idp-es256.pub.pem\") -m int 1 }"
  fi
  cat <<EOF
  http-request set-var(txn.scope) http_auth_bearer,jwt_payload_query('\$.scope')
  http-request deny status 403 content-type application/json string '{"error":"missing scope: operator.read"}' unless { var(txn.scope) -m reg (^|\ )operator\.read(\ |\$) }
  http-request set-header X-Forwarded-User %[http_auth_bearer,jwt_payload_query('\$.sub')]
  http-request set-header X-OpenClaw-Scopes %[var(txn.scope)]
  http-request del-header authorization
EOF
}
{ haproxy_head haproxy; printf 'frontend plain\n  bind 127.0.0.1:18194\n  default_backend fast\n'; } > "$WORK/haproxy.cfg"
{ haproxy_head haproxy_jwt; printf 'frontend jwt\n  bind 127.0.0.1:18195\n'; haproxy_jwt_rules 0; echo "  default_backend fast"; } > "$WORK/haproxy_jwt.cfg"
{ haproxy_head haproxy_jwt_cached
  printf 'backend jwt_cache\n  stick-table type binary len 32 size 100k expire 60s store gpt0\n'
  printf 'frontend jwt\n  bind 127.0.0.1:18196\n'; haproxy_jwt_rules 1; echo "  default_backend fast"; } > "$WORK/haproxy_jwt_cached.cfg"
start_haproxy() {
  haproxy -c -q -f "$WORK/$1.cfg" || die "HAProxy refuses $1.cfg"
  haproxy -f "$WORK/$1.cfg" -D -p "$WORK/$1.pid" 2>>"$WORK/$1.log" || die "HAProxy $1 did not start ($(tail -3 "$WORK/$1.log"))"
  PIDFILES+=("$WORK/$1.pid")
}

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

port_of() {
  case $1 in
    direct) echo "${FAST_UP##*:}";; relay) echo 18197;; nginx) echo 18182;; nginx_log) echo 18186;;
    haproxy) echo 18194;; haproxy_jwt) echo 18195;; haproxy_jwt_cached) echo 18196;;
    sg_full) echo 18181;; sg_noaudit) echo 18189;; sg_fresh) echo 18185;; sg_first) echo 18183;;
    sg_limits_off) echo 18192;; sg_stream) echo 18193;; sg_ws) echo 18184;;
    ub_direct|stream_direct) echo "${SLOW_UP##*:}";; ub_nginx) echo 18188;; ub_sg) echo 18193;;
    *) die "unknown mode $1";;
  esac
}
# The processes whose CPU is the proxy's: every process of the instance (nginx: master and workers).
proc_tree() { local p; p=$(cat "$WORK/$1.pid"); echo "$p $(pgrep -P "$p" | tr '\n' ' ')"; }
proxy_pids() {
  case $1 in
    direct|ub_direct) echo "";;
    nginx|ub_nginx) proc_tree nginx;; nginx_log) proc_tree nginx_log;;
    haproxy|haproxy_jwt|haproxy_jwt_cached) proc_tree "$1";;
    ub_sg) echo "$PID_sg_stream";;
    relay) echo "$RELAY_PID";;
    sg_*) eval "echo \"\$PID_$1\"";;
  esac
}
# The log file a mode writes per request (truncated before each window, measured after it).
log_file_of() { case $1 in sg_full|sg_limits_off) echo "$WORK/$1.log";; nginx_log) echo "$WORK/nginx_log-access.log";; *) echo "";; esac; }

for m in $MODES $LAT_MODES; do port_of "$m" >/dev/null; done  # an unknown mode stops the run here

# --- proxies -----------------------------------------------------------------------------------
start_sg() { (cd "$WORK" && exec "$SG" --log-format json run --config "$WORK/$1.toml" 2>>"$WORK/$1.log") & PIDS+=($!); eval "PID_$1=$!"; }
start_nginx nginx
start_nginx nginx_log
for m in haproxy $JWT_MODES; do start_haproxy $m; done
SG_MODES="sg_full sg_noaudit sg_fresh sg_first sg_stream"
[ "$LIMITS_ROW" = 1 ] && SG_MODES+=" sg_limits_off"
for m in $SG_MODES; do start_sg $m; done
case " $MODES $LAT_MODES " in *" relay "*)
  "$SB" relay --listen 127.0.0.1:18197 --upstream "$FAST_UP" --threads "$WORKERS" 2>/dev/null & RELAY_PID=$!; PIDS+=($RELAY_PID)
  wait_http 18197 "$RELAY_PID" || die "the relay did not come up";;
esac

for m in $SG_MODES; do
  wait_http "$(port_of $m)" "$(proxy_pids $m)" || {
    log "$m did not come up; its log:"; tail -5 "$WORK/$m.log" >&2 || true
    die "$m did not start"
  }
done
for m in nginx nginx_log haproxy $JWT_MODES; do
  wait_http "$(port_of $m)" || die "$m did not come up"
done

# --- smoke test --------------------------------------------------------------------------------
code_of() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v1/models" ${2:+-H "Authorization: Bearer $2"}; }
expect() { # port token code what
  local got; got=$(code_of "$1" "$2")
  [ "$got" = "$3" ] || die "smoke test: $4 on port $1 answered $got, expected $3"
}
for m in $MODES $LAT_MODES sg_stream; do
  expect "$(port_of $m)" "$TOKEN" 200 "$m with the bench token"
done
for m in $JWT_MODES; do
  p=$(port_of $m)
  for _ in 1 2; do  # twice: the second good request is a cache hit, the second forged one must not be
    expect $p "$TOKEN" 200 "$m, good ES256 token"
    expect $p "$FORGED" 401 "$m, forged signature"
  done
  expect $p "" 401 "$m, no token"
  expect $p "$(cat "$WORK/bad-iss.txt")" 401 "$m, wrong issuer"
  expect $p "$(cat "$WORK/bad-aud.txt")" 401 "$m, wrong audience"
  expect $p "$(cat "$WORK/no-read.txt")" 403 "$m, token without operator.read"
  if [ -s "$WORK/expired.txt" ]; then expect $p "$(cat "$WORK/expired.txt")" 401 "$m, expired token"
  else die "could not mint the expired token for the smoke test"; fi
done
for m in sg_noaudit sg_first; do
  p=$(port_of $m)
  expect $p "$FORGED" 401 "$m, forged signature"
  expect $p "" 401 "$m, no token"
  expect $p "$(cat "$WORK/bad-iss.txt")" 401 "$m, wrong issuer"
  expect $p "$(cat "$WORK/bad-aud.txt")" 401 "$m, wrong audience"
  expect $p "$(cat "$WORK/no-read.txt")" 403 "$m, token without operator.read"
done
sleep 1.2  # nginx flushes its buffered access log every second
grep -q '"scopegate::audit"' "$WORK/sg_full.log" || die "smoke test: sg_full wrote no audit line to its log file"
grep -q '"request_id"' "$WORK/nginx_log-access.log" || die "smoke test: nginx_log wrote no access-log line"
if grep -q '"scopegate::audit"' "$WORK/sg_noaudit.log" 2>/dev/null; then die "smoke test: sg_noaudit wrote an audit line"; fi
log "smoke test passed: every mode answers 200; HAProxy verifies the ES256 token (forged, wrong iss/aud, expired 401; no operator.read 403)"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Idle memory of every proxy: RSS summed over its processes (pages shared between nginx's master and
# workers counted in each) and PSS (shared pages split between the processes that map them).
rss_sum() { local t=0 p; for p in "$@"; do t=$((t + $(rss_kib "$p"))); done; echo $t; }
pss_sum() { local t=0 p v; for p in "$@"; do v=$(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null); t=$((t + ${v:-0})); done; echo $t; }
for m in nginx nginx_log haproxy $JWT_MODES sg_noaudit sg_full; do
  # shellcheck disable=SC2046
  emit "{\"kind\":\"memory\",\"what\":\"idle_rss_kib\",\"mode\":\"$m\",\"value\":$(rss_sum $(proxy_pids $m)),\"pss_kib\":$(pss_sum $(proxy_pids $m))}"
done

now_s() { date +%s.%N; }

# --- throughput at fixed concurrency, interleaved ----------------------------------------------
# One unrecorded warm-up window per mode first: upstream connections opened, caches filled.
if [ "$WARMUP" != 0 ]; then
  for mode in $MODES; do
    lua=(); [ $mode = sg_first ] && lua=(-s "$WORK/first-sight.lua")
    wrk -t2 -c"$CONC" -d"${WARMUP}s" "${lua[@]}" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$(port_of $mode)/v1/models" \
      ${lua:+-- "$WORK/tokens.txt"} >/dev/null
  done
  for lf in "$WORK/sg_full.log" "$WORK/nginx_log-access.log" "$WORK/sg_limits_off.log"; do [ -f "$lf" ] && : > "$lf"; done
fi
for r in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  for mode in $(round_order "$r" $MODES); do
    port=$(port_of $mode)
    pids=$(proxy_pids $mode)
    case $mode in ub_*) up_pids=$SLOW_UP_PID;; *) up_pids=$(upstream_pids);; esac
    lf=$(log_file_of $mode)
    [ -n "$lf" ] && : > "$lf"
    u0=0 s0=0
    # shellcheck disable=SC2086
    [ -n "$pids" ] && read -r u0 s0 < <(cpu_ticks $pids)
    # shellcheck disable=SC2086
    read -r uu0 us0 < <(cpu_ticks $up_pids)
    t0=$(now_s)
    sampler=""
    if [ $mode = sg_full ]; then
      # RSS of scopegate sampled while it is under load.
      ( peak=0; for _ in $(seq 1 $((DUR*4))); do v=$(rss_kib "$PID_sg_full"); if [ "$v" -gt "$peak" ]; then peak=$v; fi; sleep 0.25; done; echo "$peak" > "$WORK/peak_rss" ) &
      sampler=$!
    fi
    if [ $mode = sg_first ]; then
      out=$(wrk -t2 -c"$CONC" -d"${DUR}s" -s "$WORK/first-sight.lua" "http://127.0.0.1:$port/v1/models" -- "$WORK/tokens.txt")
    else
      out=$(wrk -t2 -c"$CONC" -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models")
    fi
    t1=$(now_s)
    # shellcheck disable=SC2086
    read -r uu1 us1 < <(cpu_ticks $up_pids)
    # A mode that logs gets its last buffered lines written (nginx flushes every second) before the
    # proxy's CPU is read, so that the writes are counted.
    [ -n "$lf" ] && sleep 1.1
    u1=0 s1=0
    # shellcheck disable=SC2086
    [ -n "$pids" ] && read -r u1 s1 < <(cpu_ticks $pids)
    if [ -n "$sampler" ]; then
      wait "$sampler"
      emit "{\"kind\":\"memory\",\"what\":\"load_rss_kib\",\"round\":$r,\"value\":$(cat "$WORK/peak_rss")}"
    fi
    rps=$(wrk_rps "$out"); rps=${rps:-0}
    n=$(awk '/requests in/ {print $1}' <<<"$out"); n=${n:-0}
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ' | sed 's/  */ /g')
    log_bytes=null
    if [ -n "$lf" ]; then log_bytes=$(stat -c %s "$lf"); : > "$lf"; fi
    log "round $r $mode: $rps rps, $n requests $errs"
    [ "$n" -gt 0 ] || die "$mode completed no request"
    for p in $pids; do kill -0 "$p" 2>/dev/null || die "$mode: process $p died"; done
    emit "{\"kind\":\"throughput\",\"mode\":\"$mode\",\"round\":$r,\"rps\":$rps,\"requests\":$n,\"non2xx\":$non2xx,\"errors\":\"$errs\"}"
    wall=$(python3 -c "print(round($t1 - $t0, 3))")
    if [ -n "$pids" ]; then
      emit "{\"kind\":\"cpu\",\"mode\":\"$mode\",\"round\":$r,\"requests\":$n,\"non2xx\":$non2xx,\"user_ticks\":$((u1 - u0)),\"sys_ticks\":$((s1 - s0)),\"clk_tck\":$CLK_TCK,\"wall_s\":$wall,\"upstream_ticks\":$((uu1 + us1 - uu0 - us0)),\"log_bytes\":$log_bytes}"
    else
      emit "{\"kind\":\"cpu\",\"mode\":\"$mode\",\"round\":$r,\"requests\":$n,\"non2xx\":$non2xx,\"user_ticks\":null,\"sys_ticks\":null,\"clk_tck\":$CLK_TCK,\"wall_s\":$wall,\"upstream_ticks\":$((uu1 + us1 - uu0 - us0)),\"log_bytes\":null}"
    fi
  done
done

# --- latency at a fixed rate, interleaved ------------------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  for mode in $(round_order "$r" $LAT_MODES); do
    port=$(port_of $mode)
    j=$(oha -z "${DUR}s" -q "$RATE" -c "$CONC" --latency-correction --no-tui --output-format json \
        -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/v1/models")
    read -r p50 p99 ok < <(python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print(p["p50"]*1e6, p["p99"]*1e6, d["summary"]["successRate"])' <<<"$j")
    log "latency round $r $mode: p50 ${p50}us p99 ${p99}us success $ok"
    emit "{\"kind\":\"latency\",\"mode\":\"$mode\",\"round\":$r,\"p50_us\":$p50,\"p99_us\":$p99,\"success\":$ok}"
  done
done
# Whatever the latency windows wrote to sg_full's and nginx_log's logs.
: > "$WORK/sg_full.log"; : > "$WORK/nginx_log-access.log"

# --- SSE: upstream write -> client read, per event size (one-thread sgbench upstream) -------------
# Modes: stream_direct (the upstream itself), nginx (its /sse-bench location), sg_stream.
for pad in 0 4096 65536; do
  for r in $(seq 1 "$ROUNDS"); do
    for mode in stream_direct nginx sg_stream; do
      port=$(port_of $mode)
      j=$("$SB" sse --url "http://127.0.0.1:$port/sse-bench" --events 200 --interval-ms 5 --pad $pad --header "Authorization: Bearer $TOKEN")
      emit "{\"kind\":\"sse\",\"mode\":\"$mode\",\"pad\":$pad,\"round\":$r,\"result\":$j}"
    done
  done
  log "sse pad $pad done"
done

# --- WebSocket relay throughput (one-thread sgbench upstream) ---------------------------------
for r in $(seq 1 "$ROUNDS"); do
  for mode in stream_direct nginx sg_stream; do
    port=$(port_of $mode)
    j=$("$SB" ws-throughput --url "ws://127.0.0.1:$port/ws" --seconds "$DUR" --connections "$CONC" --header "Authorization: Bearer $TOKEN")
    emit "{\"kind\":\"ws\",\"mode\":\"$mode\",\"round\":$r,\"result\":$j}"
  done
done
log "websocket throughput done"

# --- memory with many idle WebSockets (fresh instance) --------------------------------------------
# Each proxied WebSocket holds two descriptors in scopegate (client and upstream side); a container
# whose hard limit cannot be raised caps how many fit. WS_IDLE=0 skips this part.
if [ "$WS_IDLE" -gt 0 ]; then
  fd_cap=$(( ($(ulimit -n) - 256) / 2 ))
  if [ "$WS_IDLE" -gt "$fd_cap" ]; then
    log "open-file limit $(ulimit -n) allows $fd_cap proxied WebSockets, not $WS_IDLE: measuring $fd_cap"
    WS_IDLE=$fd_cap
  fi
  start_sg sg_ws; wait_http 18184 "$PID_sg_ws" || die "sg_ws did not come up"
  before=$(rss_kib "$PID_sg_ws")
  coproc IDLE { "$SB" ws-idle --url "ws://127.0.0.1:18184/ws" --count "$WS_IDLE" --header "Authorization: Bearer $TOKEN"; }
  read -r line <&"${IDLE[0]}"
  after=$(rss_kib "$PID_sg_ws")
  emit "{\"kind\":\"ws_idle\",\"count\":$WS_IDLE,\"opened\":$line,\"rss_before_kib\":$before,\"rss_after_kib\":$after}"
  exec {IDLE[1]}>&-
  wait "$IDLE_PID" 2>/dev/null || true
  log "idle websockets: ${before} KiB -> ${after} KiB for $WS_IDLE sockets"
else
  log "idle websockets skipped (WS_IDLE=0)"
fi

python3 "$ROOT/bench/summarize.py" "$RESULTS" "$WORKERS" "$CONC" "$RATE" > "$OUT/summary.md"
cat "$OUT/summary.md"
