#!/usr/bin/env bash
# Public-tools benchmark of the proxy's cost (issue 15): h2load and curl against an nginx
# origin on loopback, direct and through each jail, in interleaved rounds.
#
#   small1 / small8   h2load, `GET /small` (13-byte body) on 1 / 8 keep-alive HTTP/1.1
#                     connections for DURATION seconds
#   download          curl, one DL_MIB MiB body
#
# Setups: direct (client -> nginx), nsjail (boundary runs the client; the jail's DNS stub and
# netfilter send it to the proxy), landjail (boundary --jail-type landjail; h2load has no
# HTTP proxy support, so it speaks TLS straight to the proxy's port with --connect-to and the
# proxy routes by SNI to port 443; curl uses the HTTPS_PROXY boundary sets, i.e. CONNECT).
# Each round runs every setup once per workload, so load changes hit all setups alike; the
# table gives medians over rounds and ratios to direct. CPU is read from /proc/<pid>/stat
# (utime+stime) of the client (its shell's children times), nginx (one process,
# master_process off) and the proxy (the boundary process), over the measured run only.
#
# Run as root from the repository root:  integration/bench/h2load.sh
# Profiles: PERF=1 records the proxy process with `perf record` (linux-perf) during each jailed
# run (the last round's run is kept) into target/bench/h2load/perf-SETUP-WORK.data and
# prints the top entries; PERF_CALLGRAPH="--call-graph dwarf" adds call stacks for
# flame graphs (`perf script | inferno-collapse-perf | inferno-flamegraph`).
# A/B: SETUPS="direct nsjail nsjail@alt" adds a setup run with ALT_BOUNDARY (another build)
# and/or ALT_ENV ("NAME=value ..."), interleaved with the others; nsjail@NAME runs the binary
# in $BIN_NAME (e.g. BIN_old=/tmp/boundary-old SETUPS="direct nsjail@old nsjail").
# EVENTS="sched:sched_switch,syscalls:sys_enter_epoll_wait,...": counts of these perf events in
# the proxy's threads (`perf stat --per-thread -p`), per request, one row each (tracepoints
# are counted in the context they fire in: sched:sched_waking = wake-ups the proxy made).
# AGENT_SINK=1: the audit records go to a stand-in agent socket (read and discarded), as in a
# Coder workspace; without it boundary runs with --disable-audit-logs.
# Knobs: WORKS ("small1 small8 download"), ROUNDS (3) DURATION (4 s) DL_MIB (256) PORT (443; landjail needs 443 because a
# connection straight to the proxy is routed to port 443). Needs nginx, h2load
# (nghttp2-client), curl, openssl, python3; offers the apt-get line when one is missing.
# Nothing leaves the machine: nginx listens on 127.0.0.1, names are given with --resolve.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4}"
DL_MIB="${DL_MIB:-256}"
PORT="${PORT:-443}"
PERF_CALLGRAPH="${PERF_CALLGRAPH:-}"
SETUPS="${SETUPS:-direct nsjail landjail}"
WORKS="${WORKS:-small1 small8 download}"
ALT_BOUNDARY="${ALT_BOUNDARY:-$root/target/release/boundary}"
ALT_ENV="${ALT_ENV:-}"
out="$root/target/bench/h2load"

if [ "$(id -u)" != 0 ]; then
    echo "h2load.sh: run as root (nsjail needs namespaces; the script reads other processes' /proc)" >&2
    exit 1
fi
missing=()
for t in nginx:nginx h2load:nghttp2-client curl:curl openssl:openssl python3:python3; do
    command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || missing+=("${t#*:}")
done
if [ -n "${PERF:-}" ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "h2load.sh: missing tools; install them with: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
if ss -ltn | grep -q "127.0.0.1:$PORT \|\*:$PORT \|0.0.0.0:$PORT "; then
    echo "h2load.sh: port $PORT is taken; free it or set PORT (landjail rows then need 443)" >&2
    exit 1
fi

echo "h2load.sh: building the release boundary binary" >&2
cargo build --release -q -p boundary --bin boundary
boundary="$root/target/release/boundary"

rm -rf "$out"
mkdir -p "$out/www" "$out/tmp" "$out/run"
results="$out/results.jsonl"
: >"$results"

# Origin certificate: a CA and a leaf for bench.test (the proxy verifies the origin).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench.test \
    -keyout "$out/leaf.key" -out "$out/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\n' >"$out/leaf.ext"
openssl x509 -req -in "$out/leaf.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -days 2 -extfile "$out/leaf.ext" -out "$out/leaf.pem" 2>/dev/null
truncate -s "${DL_MIB}M" "$out/www/big"

cat >"$out/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $out/nginx.pid;
error_log $out/nginx-error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $out/tmp/body;
    proxy_temp_path $out/tmp/proxy;
    fastcgi_temp_path $out/tmp/fastcgi;
    uwsgi_temp_path $out/tmp/uwsgi;
    scgi_temp_path $out/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT ssl;
        server_name bench.test;
        ssl_certificate $out/leaf.pem;
        ssl_certificate_key $out/leaf.key;
        location = /small { default_type text/plain; return 200 "hello, world\n"; }
        location = /big { root $out/www; }
    }
}
EOF

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
"$nginx_bin" -c "$out/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")
for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$PORT " && break; sleep 0.1; done
curl -sf --cacert "$out/ca.pem" --resolve "bench.test:$PORT:127.0.0.1" \
    "https://bench.test:$PORT/small" >/dev/null ||
    { echo "h2load.sh: nginx does not answer on 127.0.0.1:$PORT (see $out/nginx-error.log)" >&2; exit 1; }

lport=18290
while ss -ltn | grep -q ":$lport "; do lport=$((lport + 1)); done
export XDG_CONFIG_HOME="$out/config"
mkdir -p "$XDG_CONFIG_HOME"
bflags=(--log-level error --resolve bench.test=127.0.0.1
    --upstream-ca-file "$out/ca.pem" --allow "domain=bench.test")
if [ -n "${AGENT_SINK:-}" ]; then
    # A stand-in for the Coder agent: reads the audit socket and discards what it reads, so
    # every request's record goes through the forwarder as in a workspace.
    python3 - "$out/agent.sock" <<'PY' &
import os, socket, sys, threading
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
def drain(c):
    while c.recv(1 << 16):
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
PY
    pids+=("$!")
    bflags+=(--log-proxy-socket-path "$out/agent.sock")
else
    bflags+=(--disable-audit-logs)
fi
url="https://bench.test:$PORT"
[ "$PORT" = 443 ] && url="https://bench.test"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Times the process's threads went to sleep (voluntary context switches): its wake-ups.
sleeps() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }
# Nanoseconds the process's threads were runnable but waited for a CPU (schedstat field 2).
rqwait() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f\n", s}'; }

# The client command of one setup and workload, as run inside the wrapper.
client_cmd() {
    local setup="$1" work="$2" log="$3" via=()
    case "${setup%@*}" in
    direct) via=(--connect-to "127.0.0.1:$PORT") ;;
    landjail) via=(--connect-to "127.0.0.1:$lport") ;;
    esac
    case "$work" in
    small1 | small8)
        printf '%q ' h2load --h1 -c "${work#small}" -t 1 -D "$DURATION" --log-file "$log" "${via[@]}" "$url/small"
        ;;
    download)
        local c=(curl -sS -o /dev/null -w '%{speed_download} %{size_download}\n')
        [ "${setup%@*}" = direct ] && c+=(--cacert "$out/ca.pem" --resolve "bench.test:$PORT:127.0.0.1")
        printf '%q ' "${c[@]}" "$url/big"
        ;;
    esac
}

# measure ROUND SETUP WORK: runs the client (jailed or not) and appends one JSON line.
measure() {
    local round="$1" setup="$2" work="$3" tag="$out/run/$1-$2-$3"
    local wrapper="$tag.sh"
    cat >"$wrapper" <<EOF
touch $tag.ready
while [ ! -e $tag.go ]; do sleep 0.02; done
$(client_cmd "$setup" "$work" "$tag.log") >$tag.out 2>&1 || echo "client exit \$?" >>$tag.out
times >$tag.times
touch $tag.done
while [ ! -e $tag.fin ]; do sleep 0.02; done
EOF
    local mid="" bin="$boundary" envs=()
    if [ "${setup%@*}" != "$setup" ]; then
        local var="BIN_${setup#*@}"
        bin="${!var:-$ALT_BOUNDARY}"
        read -r -a envs <<<"$ALT_ENV"
    fi
    case "${setup%@*}" in
    direct) sh "$wrapper" & ;;
    nsjail) env "${envs[@]}" "$bin" "${bflags[@]}" -- sh "$wrapper" >"$tag.boundary" 2>&1 & ;;
    landjail)
        env "${envs[@]}" "$bin" --jail-type landjail --proxy-port "$lport" "${bflags[@]}" \
            -- sh "$wrapper" >"$tag.boundary" 2>&1 &
        ;;
    esac
    local runner=$!
    [ "$setup" != direct ] && mid=$runner
    for _ in $(seq 300); do [ -e "$tag.ready" ] && break; sleep 0.05; done
    [ -e "$tag.ready" ] || { echo "h2load.sh: $setup did not start (see $tag.boundary)" >&2; exit 1; }
    sleep 0.3
    local p0 n0 p1 n1
    p0="$([ -n "$mid" ] && ticks "$mid" || echo 0)"
    local w0 w1
    w0="$([ -n "$mid" ] && sleeps "$mid" || echo 0)"
    n0="$(ticks "$nginx_pid")"
    local q0 q1 o0 o1
    q0="$([ -n "$mid" ] && rqwait "$mid" || echo 0)"
    o0="$(rqwait "$nginx_pid")"
    local perf_pid=""
    if [ -n "${PERF:-}" ] && [ -n "$mid" ]; then
        perf record -q -F 1999 $PERF_CALLGRAPH -p "$mid" -o "$out/perf-$setup-$work.data" \
            >/dev/null 2>&1 &
        perf_pid=$!
    fi
    local stat_pid=""
    if [ -n "${EVENTS:-}" ] && [ -n "$mid" ]; then
        perf stat -x, -e "$EVENTS" --per-thread -p "$mid" -o "$tag.events" >/dev/null 2>&1 &
        stat_pid=$!
    fi
    touch "$tag.go"
    while [ ! -e "$tag.done" ]; do sleep 0.05; done
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    if [ -n "$stat_pid" ]; then kill -INT "$stat_pid"; wait "$stat_pid" || true; fi
    p1="$([ -n "$mid" ] && ticks "$mid" || echo 0)"
    w1="$([ -n "$mid" ] && sleeps "$mid" || echo 0)"
    n1="$(ticks "$nginx_pid")"
    q1="$([ -n "$mid" ] && rqwait "$mid" || echo 0)"
    o1="$(rqwait "$nginx_pid")"
    touch "$tag.fin"
    wait "$runner" || true
    python3 - "$tag" "$setup" "$work" "$round" "$((p1 - p0))" "$((n1 - n0))" "$([ -n "$mid" ] && echo 1 || echo 0)" "$((w1 - w0))" \
        "$((q1 - q0))" "$((o1 - o0))" >>"$results" <<'EOF'
import json, os, re, sys
tag, setup, work, rnd, pt, nt, has_proxy, wakes, prq, orq = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
text = open(tag + ".out").read()
tl = open(tag + ".times").read().split("\n")[1].split()
def secs(s):
    m = re.match(r"(\d+)m([\d.]+)s", s)
    return int(m.group(1)) * 60 + float(m.group(2))
r = {"setup": setup, "work": work, "round": int(rnd), "load": open("/proc/loadavg").read().split()[0],
     "client_s": secs(tl[0]) + secs(tl[1]), "origin_s": int(nt) / hz,
     "proxy_s": int(pt) / hz if has_proxy == "1" else None,
     "proxy_sleeps": int(wakes) if has_proxy == "1" else None,
     "proxy_rq": int(prq) / 1e9 if has_proxy == "1" else None, "origin_rq": int(orq) / 1e9}
if os.path.exists(tag + ".events"):
    # perf stat -x, --per-thread: "thread-tid,count,unit,event,..." summed over the threads
    ev = {}
    for l in open(tag + ".events"):
        f = l.strip().split(",")
        if len(f) > 3 and f[1].isdigit():
            ev[f[3]] = ev.get(f[3], 0) + int(f[1])
    r["events"] = ev
if work == "download":
    try:
        speed, size = text.split()[-2:]
        r["mb_per_s"] = float(speed) / 1e6
        r["units"] = float(size) / 1e9  # GB
    except ValueError:
        r["error"] = text.strip()[-300:]
else:
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    d = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    if not m or not d or int(d.group(2)) == 0:
        r["error"] = text.strip()[-300:]
    else:
        r["rps"] = float(m.group(2))
        r["units"] = int(d.group(1))  # requests
        r["failed"] = int(d.group(3)) + int(d.group(4))
        lat = sorted(int(l.split("\t")[2]) for l in open(tag + ".log") if l.count("\t") >= 2)
        if lat:
            r["p50_us"] = lat[len(lat) // 2]
            r["p99_us"] = lat[min(len(lat) - 1, len(lat) * 99 // 100)]
print(json.dumps(r))
EOF
}

read -r -a setups <<<"$SETUPS"
for round in $(seq "$ROUNDS"); do
    for work in $WORKS; do
        for setup in "${setups[@]}"; do
            echo "h2load.sh: round $round/$ROUNDS $work $setup (load $(cut -d' ' -f1 /proc/loadavg))" >&2
            measure "$round" "$setup" "$work"
        done
    done
done

python3 - "$results" "$DURATION" "$DL_MIB" "$SETUPS" <<'EOF'
import json, os, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
setups = sys.argv[4].split()
def med(setup, work, key):
    v = [r[key] for r in rows if r["setup"] == setup and r["work"] == work and r.get(key) is not None]
    return statistics.median(v) if v else None
def per(setup, work, who, suffix="_s"):
    v = [r[who + suffix] / r["units"] for r in rows
         if r["setup"] == setup and r["work"] == work and r.get(who + suffix) is not None and r.get("units")]
    return statistics.median(v) if v else None
def cell(setup, work, key, scale=1.0, fmt="{:,.0f}", ratio=True):
    v = med(setup, work, key)
    if v is None:
        return "n/a"
    s = fmt.format(v * scale)
    d = med("direct", work, key)
    if ratio and setup != "direct" and d:
        s += f" ({v / d:.2f}x)"
    return s
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) // 1024
loads = [float(r["load"]) for r in rows]
print(f"Machine: {cpu}, {os.cpu_count()} CPUs, {mem} MiB RAM, Linux {platform.release()}; "
      f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}. "
      f"{max(r['round'] for r in rows)} interleaved rounds, medians; small = h2load --h1 "
      f"{sys.argv[2]} s per run, download = curl, {sys.argv[3]} MiB.\n")
print("| measurement | " + " | ".join(setups) + " |")
print("|---|" + "---|" * len(setups))
for work, label in [("small1", "1 conn"), ("small8", "8 conns")]:
    print(f"| small, {label}: requests/s | " + " | ".join(cell(s, work, "rps") for s in setups) + " |")
    print(f"| small, {label}: p50 / p99 µs | " + " | ".join(
        f"{cell(s, work, 'p50_us', ratio=False)} / {cell(s, work, 'p99_us', ratio=False)}" for s in setups) + " |")
    for who in ["client", "origin", "proxy"]:
        print(f"| small, {label}: {who} CPU µs/request | " + " | ".join(
            "n/a" if per(s, work, who) is None else f"{per(s, work, who) * 1e6:.1f}" for s in setups) + " |")
    print(f"| small, {label}: proxy thread sleeps/request | " + " | ".join(
        "n/a" if per(s, work, "proxy_sleeps", "") is None else f"{per(s, work, 'proxy_sleeps', ''):.2f}" for s in setups) + " |")
    for who in ["origin", "proxy"]:
        print(f"| small, {label}: {who} run-queue wait µs/request | " + " | ".join(
            "n/a" if per(s, work, who + "_rq", "") is None else f"{per(s, work, who + '_rq', '') * 1e6:.1f}" for s in setups) + " |")
names = sorted({k for r in rows for k in r.get("events", {})})
for work, label in [("small1", "1 conn"), ("small8", "8 conns")]:
    for k in names:
        def ev(s):
            v = [r["events"][k] / r["units"] for r in rows if r["setup"] == s and r["work"] == work
                 and k in r.get("events", {}) and r.get("units")]
            return f"{statistics.median(v):.2f}" if v else "n/a"
        print(f"| small, {label}: proxy {k} per request | " + " | ".join(ev(s) for s in setups) + " |")
if any(r["work"] == "download" for r in rows):
  print("| download MB/s | " + " | ".join(cell(s, "download", "mb_per_s") for s in setups) + " |")
  for who in ["client", "origin", "proxy"]:
    print(f"| download: {who} CPU s/GB | " + " | ".join(
        "n/a" if per(s, "download", who) is None else f"{per(s, 'download', who):.2f}" for s in setups) + " |")
errs = [f"{r['setup']} {r['work']} round {r['round']}: {r.get('error') or str(r.get('failed')) + ' failed'}"
        for r in rows if r.get("error") or r.get("failed")]
print("\nErrors: " + ("; ".join(errs) if errs else "none") + f". Raw rows: {sys.argv[1]}")
EOF

if [ -n "${PERF:-}" ]; then
    for f in "$out"/perf-*.data; do
        echo
        echo "$(basename "$f" .data): top symbols of the proxy process (self time)"
        perf report -q -i "$f" --no-children --sort dso,symbol --percent-limit 1.5 2>/dev/null |
            grep -v '^$' | sed 's/[ -]*$//' | cut -c1-110 | head -25
    done
fi
