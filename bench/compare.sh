#!/usr/bin/env bash
# bench/compare.sh: the same closed-loop loads against a 3-node etcd cluster,
# a 3-node raftkv cluster and one durable redis-server, one system after the
# other, on 127.0.0.1, with all data on the same disk. Writes a Markdown table
# to bench/results/latest.md and into docs/benchmarks.md.
#
#   bench/compare.sh            # full run: 10 s per load after 2 s warm-up
#   bench/compare.sh --quick    # 3 s per load after 1 s warm-up
#   bench/compare.sh --help
#
# Installs etcd and redis from Debian's packages when missing (needs root or
# sudo), builds raftkv in release mode, cleans up every process it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORIG_CMD="bench/compare.sh"
[ $# -eq 0 ] || ORIG_CMD+=$(printf ' %q' "$@")

DURATION=10s
WARMUP=2s
WORK=/tmp/raftkv-compare
CLIENTS="1 16 64 256"
SYSTEMS="etcd raftkv raftkvlease redis"
WORKLOADS="${WORKLOADS:-set get}"
KEYS=10000
VALUE_SIZE=100
UPDATE_DOCS=1
INSTALL=1
BUILD=1
MAX_OTHER=20
RETRIES=2

usage() {
    cat <<EOF
usage: bench/compare.sh [options]
  --quick             3 s per load after 1 s warm-up (default: 10 s after 2 s)
  --duration D        measured time per load (e.g. 10s)
  --warmup D          warm-up per load (e.g. 2s)
  --clients "LIST"    client counts (default: "$CLIENTS")
  --systems "LIST"    any of: etcd raftkv raftkvlease redis (default: all;
                      raftkvlease is raftkv with --lease-reads, get loads only)
  --dir DIR           data, logs and raw results (default: $WORK; wiped per system)
  --keys N            key space (default: $KEYS)
  --value-size N      value size in bytes (default: $VALUE_SIZE)
  --no-docs           leave docs/benchmarks.md and bench/results/ alone
                      (the report stays in DIR/results/)
  --no-install        do not apt-get install missing etcd/redis
  --no-build          do not run cargo build (use RAFTKV or target/release/raftkv)
  --max-other PCT     run a load again if other processes used more than PCT %
                      of the CPU meanwhile (default: $MAX_OTHER)
  --retries N         at most N such repeats per load (default: $RETRIES)
Environment: RAFTKV=path to the raftkv binary (default: target/release/raftkv,
built first); RAFTKV_BENCH="command" to run instead of "\$RAFTKV bench";
RAFTKV_LABEL=text naming the raftkv build in the report; WORKLOADS="get"
(or "set") to run only those loads (default: "set get").
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=3s; WARMUP=1s ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --systems) SYSTEMS=$2; shift ;;
        --dir) WORK=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        --value-size) VALUE_SIZE=$2; shift ;;
        --no-docs) UPDATE_DOCS=0 ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --max-other) MAX_OTHER=$2; shift ;;
        --retries) RETRIES=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Ports: far from the defaults, so a system-wide etcd or redis started by the
# Debian packages does not get in the way.
ETCD_CLIENT_PORTS=(12379 22379 32379)
ETCD_PEER_PORTS=(12380 22380 32380)
RAFTKV_BASE=17379 # RESP 17379-17381, peers 17479-17481, HTTP 17579-17581
REDIS_PORT=16379

# --- processes ---------------------------------------------------------------

PIDS=()
stop_servers() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap 'stop_servers' EXIT
trap 'exit 130' INT TERM

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# --- setup -------------------------------------------------------------------

install_missing() {
    local need=()
    command -v etcd >/dev/null || need+=(etcd-server)
    command -v etcdctl >/dev/null || need+=(etcd-client)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-cli >/dev/null || need+=(redis-tools)
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$INSTALL" = 1 ] || die "missing ${need[*]} (and --no-install given)"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing ${need[*]} from Debian's packages"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
}

needs() {
    case " $SYSTEMS " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

install_missing
RAFTKV=${RAFTKV:-$ROOT/target/release/raftkv}
if [ "$BUILD" = 1 ] && [ "$RAFTKV" = "$ROOT/target/release/raftkv" ]; then
    log "building raftkv (release)"
    (cd "$ROOT" && cargo build --release -p raftkv --quiet)
fi
[ -x "$RAFTKV" ] || die "no raftkv binary at $RAFTKV"
if [ -n "${RAFTKV_BENCH:-}" ]; then
    read -r -a BENCH <<<"$RAFTKV_BENCH"
else
    BENCH=("$RAFTKV" bench)
fi
"${BENCH[@]}" --help >/dev/null 2>&1 || die "'${BENCH[*]} --help' failed: this raftkv has no bench command"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
export ETCDCTL_API=3

# --- the three systems ---------------------------------------------------------

SERVER_PIDS=""
ADDRS=""
TARGET=""

start_etcd() {
    local dir=$WORK/etcd cluster="" i
    rm -rf "$dir"
    mkdir -p "$dir"
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
    done
    for i in 0 1 2; do
        local c=${ETCD_CLIENT_PORTS[$i]} p=${ETCD_PEER_PORTS[$i]}
        etcd --name "e$((i + 1))" --data-dir "$dir/e$((i + 1))" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token raftkv-compare \
            --quota-backend-bytes $((4 * 1024 * 1024 * 1024)) \
            >"$dir/e$((i + 1)).log" 2>&1 &
        PIDS+=($!)
    done
    SERVER_PIDS=$(IFS=,; echo "${PIDS[*]}")
    ADDRS="127.0.0.1:${ETCD_CLIENT_PORTS[0]},127.0.0.1:${ETCD_CLIENT_PORTS[1]},127.0.0.1:${ETCD_CLIENT_PORTS[2]}"
    TARGET=etcd
    local endpoints="http://${ADDRS//,/,http://}"
    wait_for 60 etcdctl --endpoints "$endpoints" --command-timeout 2s put compare-ready 1 ||
        die "etcd did not come up; see $dir/*.log"
}

start_raftkvlease() {
    RAFTKV_FLAGS=--lease-reads start_raftkv raftkvlease
}

start_raftkv() {
    local dir=$WORK/${1:-raftkv} cluster="" i
    rm -rf "$dir"
    mkdir -p "$dir"
    for i in 1 2 3; do
        cluster+="${cluster:+,}$i=127.0.0.1:$((RAFTKV_BASE + 100 + i - 1))"
    done
    ADDRS=""
    for i in 1 2 3; do
        local c=$((RAFTKV_BASE + i - 1))
        "$RAFTKV" server --id "$i" --cluster "$cluster" --data-dir "$dir/node$i" \
            --client-addr "127.0.0.1:$c" --http-addr "127.0.0.1:$((RAFTKV_BASE + 200 + i - 1))" \
            ${RAFTKV_FLAGS:-} >"$dir/node$i.log" 2>&1 &
        PIDS+=($!)
        ADDRS+="${ADDRS:+,}127.0.0.1:$c"
    done
    SERVER_PIDS=$(IFS=,; echo "${PIDS[*]}")
    TARGET=resp
    for i in 1 2 3; do
        wait_for 60 redis_ok "$((RAFTKV_BASE + i - 1))" || die "raftkv node $i did not come up; see $dir/*.log"
    done
}

redis_ok() {
    [ "$(redis-cli -p "$1" SET compare-ready 1 2>/dev/null)" = "OK" ]
}

start_redis() {
    local dir=$WORK/redis
    rm -rf "$dir"
    mkdir -p "$dir"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no \
        --appendonly yes --appendfsync always --save '' \
        --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
    PIDS+=($!)
    SERVER_PIDS=$!
    ADDRS=127.0.0.1:$REDIS_PORT
    TARGET=redis
    wait_for 30 redis_ok "$REDIS_PORT" || die "redis did not come up; see $dir/redis.log"
}

# Reads a field of a flat JSON line.
jget() {
    sed -n "s/.*\"$2\":\\(\"[^\"]*\"\\|[^,}]*\\).*/\\1/p" "$1" | tr -d '"'
}

# bench SYSTEM WORKLOAD CLIENTS [extra args]
# other_cpu FILE: busy CPU of the machine not charged to the servers or the
# load generator during the measured window, in percent of the machine: other
# processes (and kernel threads) disturbing the measurement.
other_cpu() {
    awk -v m="$(jget "$1" machine_cpu_s)" -v s="$(jget "$1" server_cpu_s)" \
        -v c="$(jget "$1" client_cpu_s)" -v d="$(jget "$1" duration_s)" -v n="$(nproc)" \
        'BEGIN { if (m == "" || m == "null" || d + 0 == 0) print 0; else { o = (m - s - c) / (d * n) * 100; printf "%.0f\n", (o < 0 ? 0 : o) } }'
}

# bench SYSTEM WORKLOAD CLIENTS [extra args]: one load. If other work took
# more than MAX_OTHER % of the CPU meanwhile, it is run again (up to RETRIES
# times, after a pause) and the least disturbed run is kept.
bench() {
    local sys=$1 wl=$2 clients=$3
    shift 3
    local out=$RESULTS/$sys-$wl-$clients attempt=0 other best=999
    while :; do
        if ! "${BENCH[@]}" --target "$TARGET" --addr "$ADDRS" --workload "$wl" --clients "$clients" \
            --keys "$KEYS" --value-size "$VALUE_SIZE" --server-pids "$SERVER_PIDS" "$@" \
            >"$out.try.json" 2>"$out.try.log"; then
            tail -n 5 "$out.try.log" >&2
            die "$sys $wl $clients clients failed; see $out.try.log"
        fi
        other=$(other_cpu "$out.try.json")
        if [ "$other" -lt "$best" ]; then
            best=$other
            mv "$out.try.json" "$out.json"
            mv "$out.try.log" "$out.log"
            echo "$other" >"$out.other"
        fi
        attempt=$((attempt + 1))
        if [ "$best" -le "$MAX_OTHER" ] || [ "$wl" = fill ] || [ "$attempt" -gt "$RETRIES" ]; then
            break
        fi
        log "$sys $wl $clients clients: other processes used ${other}% of the CPU; again in 5 s"
        sleep 5
    done
    rm -f "$out.try.json" "$out.try.log"
    [ "$wl" = fill ] || [ "$best" -le "$OTHER_MAX" ] || OTHER_MAX=$best
    local errors
    errors=$(jget "$out.json" errors)
    log "$(printf '%-6s %-5s %3s clients: %9s ops/s  p50 %7s ms  p99 %7s ms  CPU %s s/1k ops  errors %s  other CPU %s%%' \
        "$sys" "$wl" "$clients" "$(jget "$out.json" ops_per_sec)" "$(jget "$out.json" p50_ms)" \
        "$(jget "$out.json" p99_ms)" "$(jget "$out.json" server_cpu_s_per_1k_ops)" "$errors" "$best")"
    [ "${errors:-0}" = 0 ] || log "  (errors: see $out.log)"
}
OTHER_MAX=0

# Other work on the machine skews the numbers: note the load before starting.
sync
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the run: $LOAD_BEFORE"
STARTED=$SECONDS
for sys in $SYSTEMS; do
    case "$sys" in etcd | raftkv | raftkvlease | redis) ;; *) die "unknown system $sys" ;; esac
    log "starting $sys"
    "start_$sys"
    log "$sys up (pids $SERVER_PIDS); preloading $KEYS keys"
    bench "$sys" fill 64 --duration 120s
    for wl in $WORKLOADS; do
        # Lease reads change reads only: writes are raftkv's own row.
        [ "$sys" = raftkvlease ] && [ "$wl" != get ] && continue
        for c in $CLIENTS; do
            bench "$sys" "$wl" "$c" --duration "$DURATION" --warmup "$WARMUP"
        done
    done
    du -sh "$WORK/$sys" | awk -v s="$sys" '{print "[compare] " s " data: " $1}' >&2
    stop_servers
    # Let the page cache write back what this system left, so that the next
    # one does not pay for it.
    sync
done
ELAPSED=$((SECONDS - STARTED))
log "all loads done in ${ELAPSED} s"

# --- the report ------------------------------------------------------------------

ETCD_VER=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')
REDIS_VER=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')
if [ -n "${RAFTKV_LABEL:-}" ]; then
    RAFTKV_REV=$RAFTKV_LABEL
elif [ "$RAFTKV" = "$ROOT/target/release/raftkv" ]; then
    RAFTKV_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]; then RAFTKV_REV+="+dirty"; fi
else
    RAFTKV_REV="($RAFTKV)"
fi
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
MEM_GIB=$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
FS=$(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
OS=$(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release 2>/dev/null || true)

num() { # value or "-" if missing/null
    local v
    v=$(jget "$1" "$2" 2>/dev/null || true)
    if [ -z "$v" ] || [ "$v" = null ]; then echo "-"; else echo "$v"; fi
}
ratio() { # ratio A B -> "1.23×" or "-"
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f×\n", a / b }'
}
fmt_ops() { # 12345.6 -> 12,346
    awk -v v="$1" 'BEGIN {
        if (v == "-") { print "-"; exit }
        s = sprintf("%.0f", v); n = length(s); out = ""
        for (i = 1; i <= n; i++) { out = out substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) out = out "," }
        print out
    }'
}

label() {
    case "$1" in
        etcd) echo "etcd" ;;
        raftkv) echo "**raftkv**" ;;
        raftkvlease) echo "**raftkv** (lease reads)" ;;
        redis) echo "redis" ;;
    esac
}

TABLE=$RESULTS/table.md
{
    for wl in $WORKLOADS; do
        case "$wl" in
            set) echo "#### set (writes: etcd put, SET)" ;;
            get) echo "#### get (linearizable reads: etcd range, GET; redis: single node)" ;;
        esac
        echo
        echo "| system | clients | ops/s | p50 ms | p99 ms | server CPU s / 1k ops | vs etcd | vs redis |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for c in $CLIENTS; do
            etcd_ops=-
            redis_ops=-
            [ -f "$RESULTS/etcd-$wl-$c.json" ] && etcd_ops=$(num "$RESULTS/etcd-$wl-$c.json" ops_per_sec)
            [ -f "$RESULTS/redis-$wl-$c.json" ] && redis_ops=$(num "$RESULTS/redis-$wl-$c.json" ops_per_sec)
            for sys in $SYSTEMS; do
                f=$RESULTS/$sys-$wl-$c.json
                [ -f "$f" ] || continue
                ops=$(num "$f" ops_per_sec)
                mark=""
                [ "$(cat "$RESULTS/$sys-$wl-$c.other" 2>/dev/null || echo 0)" -le "$MAX_OTHER" ] || mark=" †"
                echo "| $(label "$sys") | $c | $(fmt_ops "$ops")$mark | $(num "$f" p50_ms) | $(num "$f" p99_ms) | $(num "$f" server_cpu_s_per_1k_ops) | $(ratio "$ops" "$etcd_ops") | $(ratio "$ops" "$redis_ops") |"
            done
        done
        echo
    done
} >"$TABLE"

REPORT=$RESULTS/report.md
{
    echo "Measured $(date -u +%Y-%m-%d) with \`$ORIG_CMD\` ($DURATION per load after $WARMUP warm-up; $VALUE_SIZE-byte values; $KEYS keys, preloaded)."
    echo
    echo "- Machine: $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM, Linux $(uname -r)${OS:+, $OS}; data on $FS."
    echo "- etcd ${ETCD_VER:-?} (3 members), raftkv $RAFTKV_REV (3 nodes), redis-server ${REDIS_VER:-?} (1 node, appendfsync always)."
    echo "- Servers and the load generator share the same cores. Load average before the run: $LOAD_BEFORE; other processes used at most ${OTHER_MAX} % of the CPU during a measured window (a load is repeated, up to $RETRIES times, when they use more than $MAX_OTHER %; † marks a load still above that). Total run time: ${ELAPSED} s."
    echo
    cat "$TABLE"
} >"$REPORT"

# The raw result lines, one per load, tagged with the system.
for f in "$RESULTS"/*.json; do
    sys=$(basename "$f" | cut -d- -f1)
    sed "s/^{/{\"system\":\"$sys\",/" "$f"
done >"$RESULTS/all.jsonl"
cat "$REPORT"

DOC=$ROOT/docs/benchmarks.md
if [ "$UPDATE_DOCS" = 1 ]; then
    mkdir -p "$ROOT/bench/results"
    cp "$REPORT" "$ROOT/bench/results/latest.md"
    cp "$RESULTS/all.jsonl" "$ROOT/bench/results/latest.jsonl"
    if [ -f "$DOC" ] && grep -q '<!-- results:start -->' "$DOC" && grep -q '<!-- results:end -->' "$DOC"; then
        awk -v report="$REPORT" '
            /<!-- results:start -->/ { print; while ((getline line < report) > 0) print line; skip = 1; next }
            /<!-- results:end -->/ { skip = 0 }
            !skip { print }
        ' "$DOC" >"$DOC.tmp" && mv "$DOC.tmp" "$DOC"
    else
        { echo; echo '<!-- results:start -->'; cat "$REPORT"; echo '<!-- results:end -->'; } >>"$DOC"
    fi
    log "updated $DOC and bench/results/latest.md"
fi
