#!/usr/bin/env bash
# End-to-end benchmark, one run on one machine: the same HTTPS client (boundary-loadgen)
# against the same local HTTPS origin (boundary-bench-upstream, 127.0.0.1), four ways:
#   direct      client -> origin
#   nsjail      boundary (default jail) runs the client; transparent interception
#   landjail    boundary --jail-type landjail runs the client; HTTPS_PROXY + CONNECT
#   mitmproxy   mitmdump as an explicit proxy (installed from PyPI into a venv under target/)
# Measured: small HTTPS requests on keep-alive (requests/s, p50, p99), one large HTTPS
# download (MB/s), new connections per second (TLS + one request each), and memory per idle
# connection (RSS growth of the middle process / connections held). Nothing leaves the
# machine: the origin is on loopback, names are given with --resolve.
#
# Run as root from the repository root:  integration/bench/e2e.sh
# Writes integration/bench/RESULTS.md (and target/bench/results.jsonl).
# Knobs: RPS_CONNS RPS_REQUESTS DL_BYTES CONNECT_COUNT CONNECT_CONC IDLE_CONNS.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="$root/target/bench"
rm -rf "$out/run"
mkdir -p "$out/run"
results="$out/results.jsonl"
: >"$results"

RPS_CONNS="${RPS_CONNS:-8}"
RPS_REQUESTS="${RPS_REQUESTS:-20000}"
DL_BYTES="${DL_BYTES:-1073741824}"
CONNECT_COUNT="${CONNECT_COUNT:-1000}"
CONNECT_CONC="${CONNECT_CONC:-4}"
IDLE_CONNS="${IDLE_CONNS:-500}"

if [ "$(id -u)" != 0 ]; then
    echo "e2e.sh: run as root (nsjail needs namespaces; the script reads other processes' memory)" >&2
    exit 1
fi

echo "e2e.sh: building release binaries" >&2
cargo build --release -q -p boundary -p boundary-integration --bin boundary \
    --bin boundary-loadgen --bin boundary-bench-upstream
bin="$root/target/release"
boundary="$bin/boundary"
loadgen="$bin/boundary-loadgen"

venv="$root/target/bench-venv"
if [ ! -x "$venv/bin/mitmdump" ]; then
    echo "e2e.sh: installing mitmproxy into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q mitmproxy
fi
mitm_version="$("$venv/bin/mitmdump" --version 2>/dev/null | sed -n 1p || true)"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$bin/boundary-bench-upstream" --dir "$out/run/upstream" --name bench.test --idle-close 60 \
    >"$out/run/upstream.out" &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$out/run/upstream.out" 2>/dev/null && break; sleep 0.1; done
port="$(awk '/READY/ {print $2}' "$out/run/upstream.out")"
ca="$out/run/upstream/ca.pem"
[ -n "$port" ] || { echo "e2e.sh: the upstream did not start" >&2; exit 1; }

# A free loopback port for landjail's proxy (the default 8080 may be taken).
lport=18280
while ss -ltn | grep -q ":$lport "; do lport=$((lport + 1)); done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The client arguments, as run inside each setup, for one mode.
modes() {
    case "$1" in
    rps) echo "rps --conns $RPS_CONNS --requests $RPS_REQUESTS" ;;
    download) echo "download --bytes $DL_BYTES" ;;
    connect) echo "connect --conc $CONNECT_CONC --count $CONNECT_COUNT" ;;
    esac
}

bflags=(--log-level error --disable-audit-logs --resolve bench.test=127.0.0.1
    --upstream-ca-file "$ca" --allow "domain=bench.test")
export XDG_CONFIG_HOME="$out/run/config"
mkdir -p "$XDG_CONFIG_HOME"

# run_client SETUP MODE...: prints the client's JSON line.
run_client() {
    local setup="$1"
    shift
    case "$setup" in
    direct) "$loadgen" --port "$port" --addr 127.0.0.1 --ca "$ca" "$@" ;;
    nsjail) "$boundary" "${bflags[@]}" -- "$loadgen" --port "$port" "$@" ;;
    landjail) "$boundary" --jail-type landjail --proxy-port "$lport" "${bflags[@]}" -- "$loadgen" --port "$port" "$@" ;;
    mitmproxy)
        HTTPS_PROXY="http://127.0.0.1:$mitm_port" "$loadgen" --port "$port" \
            --connect-authority "127.0.0.1:$port" --ca "$mitm_ca" "$@"
        ;;
    esac
}

# idle SETUP: RSS growth of the middle process per idle connection (KiB).
idle() {
    local setup="$1" hold="$out/run/hold-$1" go="$out/run/go-$1" err="$out/run/idle-$1.err"
    rm -f "$hold" "$go" "$err"
    local wrapper="$out/run/idle-$setup.sh"
    cat >"$wrapper" <<EOF
while [ ! -e $go ]; do sleep 0.1; done
exec "$loadgen" --port $port \$EXTRA idle --conns $IDLE_CONNS --hold-file $hold 2>$err
EOF
    local mid
    case "$setup" in
    nsjail)
        EXTRA="" "$boundary" "${bflags[@]}" -- sh "$wrapper" >/dev/null &
        mid=$!
        ;;
    landjail)
        EXTRA="" "$boundary" --jail-type landjail --proxy-port "$lport" "${bflags[@]}" -- sh "$wrapper" >/dev/null &
        mid=$!
        ;;
    mitmproxy)
        mid=$mitm_pid
        EXTRA="--connect-authority 127.0.0.1:$port --ca $mitm_ca" \
            HTTPS_PROXY="http://127.0.0.1:$mitm_port" sh "$wrapper" >/dev/null &
        ;;
    esac
    local runner=$!
    sleep 2
    local before after held
    before="$(rss_kib "$mid")"
    touch "$go"
    for _ in $(seq 600); do grep -q IDLE_READY "$err" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after="$(rss_kib "$mid")"
    held="$(awk '/IDLE_READY/ {print $2}' "$err")"
    touch "$hold"
    wait "$runner" || true
    echo "{\"setup\":\"$setup\",\"mode\":\"idle\",\"before_kib\":$before,\"after_kib\":$after,\"held\":${held:-0},\"kib_per_conn\":$(((after - before) / ${held:-1}))}" >>"$results"
}

start_mitm() {
    local confdir="$out/run/mitm"
    mkdir -p "$confdir"
    mitm_port=18443
    while ss -ltn | grep -q ":$mitm_port "; do mitm_port=$((mitm_port + 1)); done
    "$venv/bin/mitmdump" -q --listen-host 127.0.0.1 --listen-port "$mitm_port" \
        --set confdir="$confdir" --set ssl_verify_upstream_trusted_ca="$ca" \
        --set connection_strategy=lazy --set stream_large_bodies=1m >"$out/run/mitm.log" 2>&1 &
    mitm_pid=$!
    pids+=($mitm_pid)
    for _ in $(seq 100); do
        [ -f "$confdir/mitmproxy-ca-cert.pem" ] && ss -ltn | grep -q ":$mitm_port " && break
        sleep 0.2
    done
    mitm_ca="$confdir/mitmproxy-ca-cert.pem"
}

for setup in direct nsjail landjail mitmproxy; do
    [ "$setup" = mitmproxy ] && start_mitm
    for mode in rps download connect; do
        echo "e2e.sh: $setup $mode" >&2
        # shellcheck disable=SC2046
        line="$(run_client "$setup" $(modes "$mode") | tail -1)"
        echo "{\"setup\":\"$setup\",\"mode\":\"$mode\",\"result\":$line}" >>"$results"
    done
    if [ "$setup" != direct ]; then
        echo "e2e.sh: $setup idle" >&2
        idle "$setup"
    fi
done

python3 - "$results" "$root/integration/bench/RESULTS.md" "$mitm_version" <<'EOF'
import json, os, platform, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
get = {}
for r in rows:
    get[(r["setup"], r["mode"])] = r
def cpu():
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            return l.split(":", 1)[1].strip()
    return platform.processor()
mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) // 1024
setups = ["direct", "nsjail", "landjail", "mitmproxy"]
def val(s, mode, key):
    r = get.get((s, mode))
    if not r:
        return None
    return r["result"][key] if "result" in r else r[key]
def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v:,}{unit}"
def ratio(s, mode, key, higher_better=True):
    d, v = val("direct", mode, key), val(s, mode, key)
    if not d or v is None:
        return ""
    return f" ({v / d:.2f}x)"
out = []
out.append("# End-to-end benchmark: direct, boundary nsjail, boundary landjail, mitmproxy\n")
out.append("One run on one machine, produced by `integration/bench/e2e.sh` (as root, from the "
           "repository root). The same client (`boundary-loadgen`, Rust, hyper over rustls) talks "
           "HTTPS to the same origin (`boundary-bench-upstream`, 127.0.0.1); only the middle "
           "changes. Ratios in brackets are to direct (for latency, higher is slower).\n")
load = open("/proc/loadavg").read().split()[:3]
out.append(f"Machine: {cpu()}, {os.cpu_count()} CPUs, {mem} MiB RAM, Linux {platform.release()}; "
           f"load average at the end {' '.join(load)} (the machine was shared with other builds and "
           f"fuzzers, so absolute figures are noisy). mitmproxy {sys.argv[3].split(':')[-1].strip()}.\n")
p = {k: os.environ.get(k) for k in ["RPS_CONNS", "RPS_REQUESTS", "DL_BYTES", "CONNECT_COUNT", "CONNECT_CONC", "IDLE_CONNS"]}
c = rows[0]["result"] if rows else {}
out.append("Workload: small requests = `GET /small` (13-byte body) on "
           f"{get[('direct','rps')]['result']['conns']} keep-alive HTTP/1.1 connections, "
           f"{get[('direct','rps')]['result']['requests']:,} requests; download = one "
           f"{get[('direct','download')]['result']['bytes'] / 2**20:,.0f} MiB body; new connections = "
           f"{get[('direct','connect')]['result']['count']:,} TLS connections with one request each, "
           "4 at a time; idle = connections opened through the middle (one request each, then held) "
           "and the middle process's RSS growth divided by their number.\n")
out.append("| measurement | " + " | ".join(setups) + " |")
out.append("|---|" + "---|" * len(setups))
def row(label, mode, key, unit="", conv=lambda x: x):
    cells = []
    for s in setups:
        v = val(s, mode, key)
        cells.append("n/a" if v is None else fmt(conv(v), unit) + ratio(s, mode, key))
    out.append(f"| {label} | " + " | ".join(cells) + " |")
row("small requests, requests/s", "rps", "rps")
row("small requests, p50 latency (µs)", "rps", "p50_us")
row("small requests, p99 latency (µs)", "rps", "p99_us")
row("large download, MB/s", "download", "mb_per_s")
row("new connections/s", "connect", "conns_per_s")
cells = ["n/a (no middle)"]
for s in setups[1:]:
    v = val(s, "idle", "kib_per_conn")
    h = val(s, "idle", "held")
    cells.append("n/a" if v is None else f"{v} KiB ({h} held)")
out.append("| memory per idle connection | " + " | ".join(cells) + " |")
errs = [(r["setup"], r["mode"], r["result"].get("errors")) for r in rows if "result" in r and r["result"].get("errors")]
out.append("")
out.append("Client errors during the run: " + (", ".join(f"{s} {m}: {e}" for s, m, e in errs) if errs else "none") + ".\n")
out.append("Notes: nsjail intercepts transparently (the client dials the name, the jail's DNS stub "
           "answers, netfilter redirects to the proxy); landjail and mitmproxy are explicit proxies "
           "(the client sends CONNECT). boundary runs with `--log-level error --disable-audit-logs` "
           "and one allow rule; every request is still decided and audited to the local log "
           "pipeline. mitmproxy runs `mitmdump -q` with upstream verification against the "
           "origin's CA. Raw figures: `target/bench/results.jsonl`.\n")
out.append("Reproduce: `sudo integration/bench/e2e.sh` (builds the release binaries, installs "
           "mitmproxy from PyPI into `target/bench-venv`, writes this file).\n")
open(sys.argv[2], "w").write("\n".join(out))
print("\n".join(out))
EOF
