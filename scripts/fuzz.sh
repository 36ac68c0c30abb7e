#!/usr/bin/env bash
# Fuzzes flowctl's input parsers with cargo-fuzz (libFuzzer). Not part of .ci/run.
#
#   scripts/fuzz.sh [target|all] [seconds]
#
# Targets: data_endpoint webhook_envelope csv_row flow_json phone (default: all, one after
# the other). Seconds: run time per target (default 600). Needs a nightly toolchain; installs
# cargo-fuzz when missing. Each target has a dictionary in fuzz/dicts. The corpus grows in
# fuzz/corpus/<target> (seeded from fuzz/seeds/<target> and fuzz/regressions/<target>),
# findings land in fuzz/artifacts/<target>; the fuzzer stops at the first one.
# Environment: FUZZ_SANITIZER (default address; "none" runs faster without AddressSanitizer),
# FUZZ_TOOLCHAIN (default nightly), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

ALL=(data_endpoint webhook_envelope csv_row flow_json phone)
target=${1:-all}
seconds=${2:-600}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-address}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if [[ $target == all ]]; then
    targets=("${ALL[@]}")
elif [[ " ${ALL[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "unknown target '$target' (one of: ${ALL[*]}, all)" >&2
    exit 2
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "seconds must be a positive integer, got '$seconds'" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q "^$toolchain"; then
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [[ $target == all ]]; then
    cargo "+$toolchain" fuzz build -s "$sanitizer"
else
    cargo "+$toolchain" fuzz build -s "$sanitizer" "$target"
fi

status=0
for t in "${targets[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    for dir in seeds regressions; do
        if [[ -d $dir/$t ]]; then
            cp -n "$dir/$t"/* "$corpus"/ 2>/dev/null || true
        fi
    done
    case $t in
        csv_row) dict=dicts/csv.dict ;;
        phone) dict=dicts/phone.dict ;;
        *) dict=dicts/json.dict ;;
    esac
    echo "== $t: $seconds s, corpus $(find "$corpus" -type f | wc -l) files"
    # libFuzzer's default is one process fuzzing in the foreground: targets run one at a
    # time, as the machine is shared with builds and tests.
    # shellcheck disable=SC2086
    cargo "+$toolchain" fuzz run -s "$sanitizer" "$t" "$corpus" -- \
        -dict="$dict" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 ${FUZZ_ARGS:-} || status=$?
    if ((status != 0)); then
        echo "== $t found something: see fuzz/artifacts/$t" >&2
        break
    fi
done
exit "$status"
