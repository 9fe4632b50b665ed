#!/usr/bin/env bash
# Build every fuzz target and run each for a short while (default 10 seconds).
#
#   tests/fuzz/smoke.sh [SECONDS] [TARGET...]
#
# Not part of tests/run or CI (their time budget is spent on the test suite); run it by hand
# after changing a decoder or parser. Installs cargo-fuzz when it is missing. New corpus
# entries go to a scratch directory, so the hand-written seeds in corpus/ stay as they are;
# crashes are written to tests/fuzz/artifacts/<target>/ and make the script fail.
#
# Environment: CARGO_TARGET_DIR (build directory), CARGO_FUZZ (path of a cargo-fuzz binary),
# FUZZ_WORK_DIR (where the growing corpus is kept; a fresh temporary directory by default),
# FUZZ_SANITIZER (default "none", which works on a stable toolchain; "address" needs nightly).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-10}
shift || true
all_targets=(tlv api_request noderange expression journal_record http_params tftp dhcp)
targets=("${@:-${all_targets[@]}}")
sanitizer=${FUZZ_SANITIZER:-none}

cargo_fuzz=${CARGO_FUZZ:-}
if [ -z "$cargo_fuzz" ]; then
    if cargo fuzz --version >/dev/null 2>&1; then
        cargo_fuzz="cargo fuzz"
    else
        root=${CARGO_FUZZ_ROOT:-$PWD/target/cargo-fuzz}
        if [ ! -x "$root/bin/cargo-fuzz" ]; then
            echo "== installing cargo-fuzz into $root"
            cargo install cargo-fuzz --locked --root "$root"
        fi
        cargo_fuzz="$root/bin/cargo-fuzz"
    fi
fi

work=${FUZZ_WORK_DIR:-$(mktemp -d -t confluent-fuzz.XXXXXX)}
echo "== building the fuzz targets (sanitizer: $sanitizer, debug assertions on)"
$cargo_fuzz build -s "$sanitizer" --debug-assertions --fuzz-dir tests/fuzz

passed=0
failed=0
failed_targets=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    echo "== fuzzing $target for ${seconds}s"
    log="$work/$target.log"
    if $cargo_fuzz run -s "$sanitizer" --debug-assertions --fuzz-dir tests/fuzz "$target" \
        "$work/$target" "tests/fuzz/corpus/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^Done [0-9]+ runs' "$log" || true
    else
        failed=$((failed + 1))
        failed_targets+=("$target")
        tail -n 40 "$log"
        echo "!! $target failed; full log in $log (a crashing input is saved under tests/fuzz/artifacts/$target/)"
    fi
done

echo "smoke: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "failed targets: ${failed_targets[*]}"
    exit 1
fi
