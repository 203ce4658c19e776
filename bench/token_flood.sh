#!/usr/bin/env bash
# Memory with many distinct valid tokens: N different ES256 tokens (distinct subjects), each sent once
# through scopegate (two workers, default token cache), scopegate's resident memory sampled along the
# way. The caches are bounded, so RSS must level off once they are full, whatever N is.
#
#   COUNT=1000000 bash bench/token_flood.sh     # about three minutes on two cores; needs wrk, curl
#
# Prints one line per sample (RSS, peak RSS, distinct tokens verified so far) and a summary line; the
# results go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
COUNT=${COUNT:-1000000}
need_tools token_flood.sh wrk curl
build_bench_binaries
WORK=$(mktemp -d /tmp/scopegate-flood.XXXXXX)
kill_pids_on_exit "$WORK"

"$SB" keys --dir "$WORK"
echo "minting $COUNT tokens..." >&2
"$SB" tokens --key "$WORK/idp-es256.pem" --count "$COUNT" --issuer https://idp.bench --audience openclaw --out "$WORK/tokens.txt"
UP=127.0.0.1:18380
SG_LISTEN=127.0.0.1:18381 SG_ADMIN=127.0.0.1:18382 SG_UPSTREAM=$UP sg_config "$WORK/sg.toml"
"$SB" upstream --listen "$UP" --body-bytes 1024 --threads 2 2>/dev/null & PIDS+=($!)
"$SG" --log-format json run --config "$WORK/sg.toml" 2>"$WORK/sg.log" & SGPID=$!; PIDS+=($SGPID)
first=$(head -1 "$WORK/tokens.txt")
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:18381/v1/models" -H "Authorization: Bearer $first" && break
  sleep 0.1
done

# Each wrk thread sends its own slice of the file once, then stops.
cat > "$WORK/distinct.lua" <<'LUA'
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local n, path = tonumber(args[1]), args[2]
  tokens, i, sent = {}, 0, 0
  local k = 0
  for line in io.lines(path) do
    if k % n == id then tokens[#tokens + 1] = line end
    k = k + 1
  end
end
function request()
  i = i + 1
  if i > #tokens then i = #tokens end
  return wrk.format("GET", "/v1/models", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

sample() {
  local rss hwm
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$SGPID/status")
  hwm=$(awk '/^VmHWM/{print $2}' "/proc/$SGPID/status")
  misses=$(curl -s http://127.0.0.1:18382/metrics | awk '/^scopegate_token_cache_misses_total/{m=$2} END{printf "%d", m}')
  echo "$(date +%s) rss_kib=$rss peak_kib=$hwm distinct_tokens_verified=$misses"
}
sample
wrk -t2 -c32 -d600s -s "$WORK/distinct.lua" "http://127.0.0.1:18381" -- 2 "$WORK/tokens.txt" >"$WORK/wrk.txt" 2>&1 &
WRK=$!
# Sampled every 10 s; wrk is stopped once every token has been verified once (after its slice a wrk
# thread repeats its last, cached, token).
misses=0
while kill -0 "$WRK" 2>/dev/null && [ "$misses" -lt "$COUNT" ]; do
  sample
  sleep 10
done
kill "$WRK" 2>/dev/null || true
wait "$WRK" 2>/dev/null || true
sample
echo "summary: $COUNT distinct tokens sent, $misses verified; idle RSS before the flood is the first line"
