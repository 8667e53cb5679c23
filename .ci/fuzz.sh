#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and fails on the first crash, leak, timeout
# or out-of-memory. FUZZ_SECONDS (default 60) per target; FUZZ_TARGETS to run a subset.
# Needs a nightly toolchain (installed if rustup is present) and cargo-fuzz (installed from
# crates.io when missing). The proxy targets need root: they make a private network namespace.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        echo "fuzz.sh: no nightly toolchain; installing it with rustup" >&2
        rustup toolchain install nightly --profile minimal
    else
        echo "fuzz.sh: cargo fuzz needs a nightly toolchain and rustup is missing; install rustup" >&2
        exit 1
    fi
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz missing; installing it from crates.io" >&2
    cargo install --locked cargo-fuzz
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
# One build of every target (cargo fuzz build takes at most one target name).
cargo +nightly fuzz build -O

failed=()
for t in $targets; do
    corpus="corpus/$t"
    mkdir -p "$corpus"
    # Work on a copy so a CI run does not grow the committed corpus.
    work="$(mktemp -d)"
    cp -r "$corpus/." "$work/"
    echo "fuzz.sh: $t for ${seconds}s" >&2
    if ! cargo +nightly fuzz run -O "$t" "$work" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1; then
        echo "fuzz.sh: $t FAILED; reproducer under fuzz/artifacts/$t/" >&2
        failed+=("$t")
    fi
    rm -rf "$work"
done

if ((${#failed[@]})); then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all targets ran ${seconds}s without a crash" >&2
