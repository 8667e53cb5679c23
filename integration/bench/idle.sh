#!/usr/bin/env bash
# Memory per idle client connection through the proxy (issue 15), one command.
#
# boundary (nsjail by default) runs boundary-loadgen, which opens IDLE_CONNS HTTPS keep-alive
# connections one after the other, sends one `GET /small` on each and then holds them all
# open and idle. The figure is the growth of the boundary process (the proxy lives in it)
# between "jail up, one request served (curl) and closed" and "all connections idle", divided
# by the number held, read from /proc/PID/smaps_rollup: Rss (what the process holds in RAM),
# Pss and Private_Dirty (the anonymous heap it wrote). Steady state, no malloc_trim from
# outside: what users get (boundary's own release after a burst of parks included).
#
# What it counts: the client leg of each connection (socket registration, TLS session,
# HTTP/1.1 or HTTP/2 server connection, the task serving it). The upstream leg is one pooled
# connection shared by all of them (the requests are one after the other and the origin
# speaks HTTP/2), so it is in the total but not per connection. Kernel socket buffers are
# not in a process's RSS and are not counted.
#
# Run as root from the repository root:  integration/bench/idle.sh
# Knobs: IDLE_CONNS (1000), PROTO (h1 | h2), JAIL (nsjail | landjail), SETTLE (seconds to
# wait after the last connection before reading, default 3), BOUNDARY (another boundary
# binary, for A/B), NO_BUILD=1 (use the release binaries as they are), HEAPTRACK=1 (attach
# heaptrack to boundary before the connections are opened and write the heap at its peak, by
# call site, to target/bench/idle/heaptrack.txt; needs the heaptrack and gdb packages).
# Prints one JSON line.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
IDLE_CONNS="${IDLE_CONNS:-1000}"
PROTO="${PROTO:-h1}"
JAIL="${JAIL:-nsjail}"
SETTLE="${SETTLE:-3}"
out="$root/target/bench/idle"

if [ "$(id -u)" != 0 ]; then
    echo "idle.sh: run as root (nsjail needs namespaces; the script reads the proxy's /proc)" >&2
    exit 1
fi
if [ -n "${HEAPTRACK:-}" ] && ! command -v heaptrack >/dev/null; then
    echo "idle.sh: HEAPTRACK=1 needs heaptrack: apt-get install -y heaptrack" >&2
    exit 1
fi
if [ -z "${NO_BUILD:-}" ]; then
    echo "idle.sh: building release binaries" >&2
    cargo build --release -q -p boundary -p boundary-integration --bin boundary \
        --bin boundary-loadgen --bin boundary-bench-upstream
fi
bin="$root/target/release"
boundary="${BOUNDARY:-$bin/boundary}"
loadgen="$bin/boundary-loadgen"

rm -rf "$out"
mkdir -p "$out"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$bin/boundary-bench-upstream" --dir "$out/upstream" --name bench.test --idle-close 600 \
    >"$out/upstream.out" &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$out/upstream.out" 2>/dev/null && break; sleep 0.1; done
port="$(awk '/READY/ {print $2}' "$out/upstream.out")"
[ -n "$port" ] || { echo "idle.sh: the upstream did not start" >&2; exit 1; }

jflags=()
if [ "$JAIL" = landjail ]; then
    lport=18380
    while ss -ltn | grep -q ":$lport "; do lport=$((lport + 1)); done
    jflags=(--jail-type landjail --proxy-port "$lport")
fi
export XDG_CONFIG_HOME="$out/config"
mkdir -p "$XDG_CONFIG_HOME"
hold="$out/hold" go="$out/go" err="$out/loadgen.err" warm="$out/warm"
# One request before the baseline, so what the proxy sets up once (the upstream trust store,
# read at the first HTTPS connection upstream; the pooled upstream connection) is in the
# baseline and not counted per idle connection.
cat >"$out/client.sh" <<EOF
curl -sS -o /dev/null https://bench.test:$port/small >$out/warm.out 2>&1 || echo "curl exit \$?" >>$out/warm.out
touch $warm
while [ ! -e $go ]; do sleep 0.1; done
exec "$loadgen" --port $port idle --conns $IDLE_CONNS --proto $PROTO --hold-file $hold 2>$err
EOF
run=("$boundary" "${jflags[@]}" --log-level error --disable-audit-logs
    --resolve bench.test=127.0.0.1 --upstream-ca-file "$out/upstream/ca.pem"
    --allow "domain=bench.test" -- sh "$out/client.sh")
"${run[@]}" >"$out/client.out" &
runner=$!
pids+=($runner)
mid="$runner"
sleep 2
if [ -n "${HEAPTRACK:-}" ]; then
    # Attached (gdb), so only boundary is traced and only what it allocates from now on.
    heaptrack -o "$out/heaptrack" -p "$mid" >"$out/heaptrack.log" 2>&1 &
    tracer=$!
    for _ in $(seq 300); do grep -q "heaptrack output will be written\|injecting" "$out/heaptrack.log" 2>/dev/null && break; sleep 0.1; done
    sleep 5
fi
field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$mid/smaps_rollup"; }
for _ in $(seq 300); do [ -e "$warm" ] && break; sleep 0.1; done
[ -e "$warm" ] || { echo "idle.sh: the warm-up request did not finish; see $out/warm.out" >&2; exit 1; }
sleep 1
b_rss="$(field Rss)" b_pss="$(field Pss)" b_pd="$(field Private_Dirty)"
touch "$go"
for _ in $(seq 1200); do grep -q IDLE_READY "$err" 2>/dev/null && break; sleep 0.1; done
sleep "$SETTLE"
a_rss="$(field Rss)" a_pss="$(field Pss)" a_pd="$(field Private_Dirty)"
held="$(awk '/IDLE_READY/ {print $2}' "$err")"
touch "$hold"
wait "$runner" || true
[ "${held:-0}" -gt 0 ] || { echo "idle.sh: no connection was held; see $err" >&2; exit 1; }
per() { python3 -c "print(round(($2 - $1) / $held, 1))"; }
echo "{\"jail\":\"$JAIL\",\"proto\":\"$PROTO\",\"held\":$held,\"rss_kib\":[$b_rss,$a_rss],\"per_conn_rss_kib\":$(per "$b_rss" "$a_rss"),\"per_conn_pss_kib\":$(per "$b_pss" "$a_pss"),\"per_conn_private_dirty_kib\":$(per "$b_pd" "$a_pd")}"
if [ -n "${HEAPTRACK:-}" ]; then
    wait "$tracer" || true
    data="$(ls "$out"/heaptrack*.zst "$out"/heaptrack*.gz 2>/dev/null | head -1)"
    heaptrack_print -f "$data" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
        --print-leaks 0 --peak-limit 30 --sub-peak-limit 8 >"$out/heaptrack.txt" 2>/dev/null || true
    echo "idle.sh: wrote $out/heaptrack.txt" >&2
fi
