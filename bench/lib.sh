# Shared by the bench scripts (run.sh, soak.sh, callgrind.sh, token_flood.sh; sourced, not run).

# need_tools SCRIPT TOOL...: stops with a message naming the first tool the script lacks.
need_tools() {
  local script=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$script needs $tool" >&2; exit 1; }
  done
}

# build_bench_binaries: the release build every script measures; sets SG (scopegate) and SB (sgbench).
build_bench_binaries() {
  cargo build --release --quiet -p scopegate -p scopegate-bench
  SG=$ROOT/target/release/scopegate
  SB=$ROOT/target/release/sgbench
}

# kill_pids_on_exit [DIR]: starts an empty PIDS; when the script exits, every pid in it is killed and
# waited for, and DIR (if given) removed.
kill_pids_on_exit() {
  PIDS=()
  CLEAN_DIR=${1:-}
  trap stop_pids EXIT
}
stop_pids() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$CLEAN_DIR" ]; then rm -rf "$CLEAN_DIR"; fi
}

# sg_config FILE: writes the scopegate config every benchmark measures — the openclaw profile, ES256
# JWT validation against idp-es256.jwk and an EdDSA assertion (both made by `sgbench keys` in the
# config's directory) — so that the scripts compare the same work. Settings come from variables:
#   SG_LISTEN (required), SG_UPSTREAM (required, host:port), SG_ISSUER (default https://idp.bench),
#   SG_WORKERS (default 2); written only when set: SG_ADMIN (admin listener), SG_MAX_CONN,
#   SG_CACHE (token cache size), SG_REUSE (assertion reuse), SG_POOL_IDLE (upstream pool idle timeout).
#   SG_AUDIT=1 leaves [log] at scopegate's defaults (level "info", one audit line per request, to
#   stderr: the scripts send stderr to a file); otherwise level "warn" and `audit = false`, as before.
#   SG_LIMITS is the body of [limits]. By default the limits stay on (their cost is measured) with
#   request rates no load generator on one address reaches: a benchmark measures the work, not the
#   refusals. SG_LIMITS='enabled = false' turns them off.
#   SG_EXTRA_TOML, when set, is appended verbatim at the end.
sg_config() {
  local file=$1
  : "${SG_LISTEN:?sg_config needs SG_LISTEN}" "${SG_UPSTREAM:?sg_config needs SG_UPSTREAM}"
  {
    echo "[server]"
    echo "listen = \"$SG_LISTEN\""
    [ -n "${SG_ADMIN:-}" ] && echo "admin_listen = \"$SG_ADMIN\""
    echo "workers = ${SG_WORKERS:-2}"
    [ -n "${SG_MAX_CONN:-}" ] && echo "max_connections = $SG_MAX_CONN"
    echo "[upstream]"
    echo "url = \"http://$SG_UPSTREAM\""
    echo "profile = \"openclaw\""
    [ -n "${SG_POOL_IDLE:-}" ] && echo "pool_idle_timeout = \"$SG_POOL_IDLE\""
    echo "[jwt]"
    echo "issuer = \"${SG_ISSUER:-https://idp.bench}\""
    echo "audience = \"openclaw\""
    [ -n "${SG_CACHE:-}" ] && echo "cache_size = $SG_CACHE"
    echo "[[jwt.keys]]"
    echo "kid = \"bench\""
    echo "algorithm = \"ES256\""
    echo "jwk_file = \"idp-es256.jwk\""
    # The bench tokens' subjects are named nowhere; the bench upstream keeps no identityScopes, so
    # their WebSockets go through as one shared identity, as before people = "listed" was the default.
    echo "[openclaw]"
    echo "people = \"shared\""
    echo "[assertion]"
    echo "key_file = \"assertion-ed25519.pem\""
    [ -n "${SG_REUSE:-}" ] && echo "reuse = \"$SG_REUSE\""
    if [ "${SG_AUDIT:-0}" != 1 ]; then
      echo "[log]"
      echo "level = \"warn\""
      echo "audit = false"
    fi
    echo "[limits]"
    printf '%s\n' "${SG_LIMITS:-requests_per_address = \"1000000000/s\"
requests_per_identity = \"1000000000/s\"}"
    if [ -n "${SG_EXTRA_TOML:-}" ]; then printf '%s\n' "$SG_EXTRA_TOML"; fi
  } > "$file"
}
