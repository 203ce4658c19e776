#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/.
#
#   scripts/fuzz.sh --ci          every target for $FUZZ_CI_SECONDS (default 20) seconds, on a scratch
#                                 copy of the committed corpus; fails on any crash or invariant break
#   scripts/fuzz.sh [SECONDS]     the longer run (default 300 s per target); new interesting inputs are
#                                 added to fuzz/corpus/<target>/ — minimise with `cargo fuzz cmin` and
#                                 commit them
#   scripts/fuzz.sh --target T …  one target only
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage passes). RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them, so no second toolchain is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

ci=false
seconds=300
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --ci) ci=true; seconds="${FUZZ_CI_SECONDS:-20}" ;;
        --target) only="$2"; shift ;;
        [0-9]*) seconds="$1" ;;
        *) echo "usage: $0 [--ci] [--target NAME] [SECONDS]" >&2; exit 2 ;;
    esac
    shift
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz =="
    cargo install cargo-fuzz --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
targets=(path_routes header_hygiene jwt_preparse config_parse ws_connect upstream_response)
[ -n "$only" ] && targets=("$only")

echo "== building fuzz targets =="
(cd fuzz && cargo fuzz build --release --debug-assertions)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
root=$(pwd)
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    if $ci; then
        mkdir -p "$scratch/$t"
        cp "$corpus"/* "$scratch/$t/"
        corpus="$scratch/$t"
    fi
    echo "== $t: ${seconds}s =="
    # -rss_limit_mb bounds memory; -max_len keeps inputs near what the code paths accept.
    status=0
    (cd fuzz && cargo fuzz run --release --debug-assertions "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1) \
        >"$scratch/$t.log" 2>&1 || status=$?
    grep -E "^(Done [0-9]+ runs|stat::new_units_added|stat::peak_rss_mb)" "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        grep -vE '^"|^#|^ +[0-9]+: |^ +at ' "$scratch/$t.log" | tail -25 || true
        echo "!! $t failed (exit $status)"
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed for: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets ran without a crash"
