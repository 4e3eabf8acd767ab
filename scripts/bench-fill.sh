#!/usr/bin/env bash
# Issue 11's figures for the durable state engine, on this machine:
#  (a) fill KEYS keys x VALUE_SIZE bytes through a 3-node cluster (fsync on),
#      then keep writing KEEP_SECS: per-decile throughput and p99.9 (last
#      tenth vs first), writes over 100 ms and whether they overlap a
#      checkpoint (from the nodes' logs);
#  (b) restart a follower holding the filled state: process start ->
#      /readyz 200 and -> a stale GET answered;
#  (c) a new node added as a learner catches the state up by snapshot:
#      bytes/s, and the leader's write latency meanwhile vs before;
#  (d) every node's RSS during and after the fill (sampled every second);
#  (e) `raftkv bench --clients 64` (100-byte values, 10,000 keys) on a fresh
#      cluster, durable engine vs memory engine.
#
# Usage: scripts/bench-fill.sh            (the full 1 GiB run, ~30+ min)
#        KEYS=50000 KEEP_SECS=10 scripts/bench-fill.sh   (a quick one)
# Settings (environment): KEYS VALUE_SIZE CLIENTS KEEP_SECS BASE_PORT
#   CATCHUP_CLIENTS CATCHUP_BENCH_SECS SMALL_SECS SMALL_ROUNDS SKIP_BUILD=1
#   SKIP_SMALL=1 KEEP_DATA=1 OUT=dir WORK=dir(empty or absent)
# Results: $OUT (default target/bench-fill/<time>): fill.json, *.json of
# the other benches, rss.csv, timings, the nodes' logs, summary.txt.
set -euo pipefail

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-1024}
CLIENTS=${CLIENTS:-64}
KEEP_SECS=${KEEP_SECS:-60}
BASE_PORT=${BASE_PORT:-17700}
CATCHUP_CLIENTS=${CATCHUP_CLIENTS:-16}
CATCHUP_BENCH_SECS=${CATCHUP_BENCH_SECS:-60}
SMALL_SECS=${SMALL_SECS:-30}
SMALL_ROUNDS=${SMALL_ROUNDS:-2}
CLUSTER_ID=11

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/bench-fill/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -n "${WORK:-}" ]]; then
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d /tmp/raftkv-fill.XXXXXX)
fi
BIN=$ROOT/target/release/raftkv
PIDS=$WORK/pids
mkdir -p "$PIDS"
SAMPLER=""

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/timeline.txt" >&2; }
now_ms() { date +%s%3N; }

cleanup() {
  set +e
  [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null
  for f in "$PIDS"/*.pid; do
    [[ -e "$f" ]] || continue
    kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  for f in "$PIDS"/*.pid; do
    [[ -e "$f" ]] || continue
    kill -9 "$(cat "$f")" 2>/dev/null
    rm -f "$f"
  done
  if [[ -z "${KEEP_DATA:-}" ]]; then
    rm -rf "$WORK"
  else
    echo "data kept in $WORK" >&2
  fi
}
trap cleanup EXIT

client_port() { echo $((BASE_PORT + $1 - 1)); }
peer_port() { echo $((BASE_PORT + 100 + $1 - 1)); }
ep() { echo "http://127.0.0.1:$(client_port "$1")"; }
ids_flag() { # ids_flag client|peer -> 1=127.0.0.1:P,2=...,3=...
  local kind=$1 out="" i
  for i in 1 2 3; do
    out+="${out:+,}$i=127.0.0.1:$("${kind}_port" "$i")"
  done
  echo "$out"
}
ENDPOINTS="$(ep 1),$(ep 2),$(ep 3)"

# start_node DIR ID ENGINE [--join]: a `raftkv serve` in the background;
# its pid in $PIDS/ID.pid, its JSON log in DIR/node-ID/server.log.
start_node() {
  local dir=$1 id=$2 engine=$3
  shift 3
  mkdir -p "$dir/node-$id"
  NO_COLOR=1 "$BIN" serve --id "$id" --cluster-id "$CLUSTER_ID" \
    --data-dir "$dir/node-$id" \
    --listen-client "127.0.0.1:$(client_port "$id")" \
    --listen-peer "127.0.0.1:$(peer_port "$id")" \
    --peers "$(ids_flag peer)" --clients "$(ids_flag client)" \
    --state-engine "$engine" --log-format json \
    --log-level "info,raft_runtime::driver=debug" "$@" \
    >>"$dir/node-$id/server.log" 2>&1 &
  echo $! >"$PIDS/$id.pid"
}

# stop_node ID: SIGTERM and wait for the exit.
stop_node() {
  local pid
  pid=$(cat "$PIDS/$1.pid")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$PIDS/$1.pid"
}

stop_all() {
  local f
  for f in "$PIDS"/*.pid; do
    [[ -e "$f" ]] || continue
    stop_node "$(basename "$f" .pid)"
  done
}

# wait_ready ID TIMEOUT_S: until /readyz answers 200.
wait_ready() {
  local deadline=$((SECONDS + $2))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "$(ep "$1")/readyz") == 200 ]]; do
    if ((SECONDS > deadline)); then
      log "node $1 not ready after $2 s"
      return 1
    fi
    sleep 0.1
  done
}

leader_id() { curl -s "$(ep "${1:-1}")/v1/status" | jq -r '.leader // empty'; }
status_field() { curl -s "$(ep "$1")/v1/status" | jq -r ".$2"; }
# metric ID NAME: the sum of NAME's samples (any labels).
metric() {
  curl -s "$(ep "$1")/metrics" |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}

# Samples every running node's RSS (VmRSS, KiB) once a second.
start_sampler() {
  echo "unix_ms,node,rss_kib" >"$OUT/rss.csv"
  (
    while true; do
      t=$(now_ms)
      for f in "$PIDS"/*.pid; do
        [[ -e "$f" ]] || continue
        id=$(basename "$f" .pid)
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$f")/status" 2>/dev/null || true)
        [[ -n "$rss" ]] && echo "$t,$id,$rss"
      done
      sleep 1
    done >>"$OUT/rss.csv"
  ) &
  SAMPLER=$!
}

bench() { "$BIN" bench --endpoints "$ENDPOINTS" "$@"; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building (release)"
  (cd "$ROOT" && nice -n 10 cargo build --release -p raftkv)
fi
for p in 1 2 3 4; do
  for port in $(client_port $p) $(peer_port $p); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is in use: set BASE_PORT" >&2
      exit 1
    fi
  done
done

{
  echo "date: $(date -u +%FT%TZ)"
  echo "revision: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo -dirty)"
  echo "settings: KEYS=$KEYS VALUE_SIZE=$VALUE_SIZE CLIENTS=$CLIENTS KEEP_SECS=$KEEP_SECS CATCHUP_CLIENTS=$CATCHUP_CLIENTS CATCHUP_BENCH_SECS=$CATCHUP_BENCH_SECS SMALL_SECS=$SMALL_SECS SMALL_ROUNDS=$SMALL_ROUNDS"
  echo "cpus: $(nproc); data on: $(df -h "$WORK" | tail -1)"
  echo "load before: $(uptime)"
} | tee "$OUT/env.txt"

# ---- (a) + (d): the fill ----------------------------------------------------
D=$WORK/fill
for i in 1 2 3; do start_node "$D" "$i" durable; done
for i in 1 2 3; do wait_ready "$i" 60; done
start_sampler
log "fill: $KEYS keys x $VALUE_SIZE B, $CLIENTS clients, then ${KEEP_SECS}s of writes"
FILL_START_MS=$(now_ms)
bench --clients "$CLIENTS" --value-size "$VALUE_SIZE" --fill "$KEYS" \
  --duration "${KEEP_SECS}s" --json "$OUT/fill.json" | tee "$OUT/fill.txt"
FILL_END_MS=$(now_ms)
echo "load after fill: $(uptime)" | tee -a "$OUT/env.txt"
log "idle 10 s (RSS after the fill)"
sleep 10
IDLE_END_MS=$(now_ms)
LEADER=$(leader_id)
for i in 1 2 3; do
  echo "node $i: data dir $(du -sb "$D/node-$i" | cut -f1) B, state.redb $(stat -c %s "$D/node-$i/kv/state.redb" 2>/dev/null || echo ?) B, checkpoints $(metric "$i" raft_checkpoints_total)"
done | tee "$OUT/sizes.txt"

# ---- (b): restart a follower ------------------------------------------------
F=1
[[ "$F" == "$LEADER" ]] && F=2
log "restart: follower $F (leader $LEADER)"
T_STOP=$(now_ms)
stop_node "$F"
T_STOPPED=$(now_ms)
T0=$(now_ms)
start_node "$D" "$F" durable
T_READY="" T_GET=""
while [[ -z "$T_READY" || -z "$T_GET" ]]; do
  if [[ -z "$T_READY" && $(curl -s -o /dev/null -w '%{http_code}' "$(ep "$F")/readyz") == 200 ]]; then
    T_READY=$(now_ms)
  fi
  if [[ -z "$T_GET" && $(curl -s -o /dev/null -w '%{http_code}' "$(ep "$F")/v1/kv/bench%2F0?consistency=stale") == 200 ]]; then
    T_GET=$(now_ms)
  fi
  if (($(now_ms) - T0 > 300000)); then
    log "follower $F not serving after 300 s"
    break
  fi
  sleep 0.01
done
{
  echo "restart_node=$F"
  echo "stop_ms=$((T_STOPPED - T_STOP))"
  echo "start_to_readyz_ms=$((${T_READY:-0} - T0))"
  echo "start_to_stale_get_ms=$((${T_GET:-0} - T0))"
} | tee "$OUT/restart.txt"

# ---- (c): a new learner catches up by snapshot ------------------------------
LEADER=$(leader_id "$F")
log "catch-up: baseline writes on leader $LEADER (20 s)"
bench --clients "$CATCHUP_CLIENTS" --value-size "$VALUE_SIZE" --keys "$KEYS" \
  --duration 20s --json "$OUT/catchup-baseline.json" >"$OUT/catchup-baseline.txt"
start_node "$D" 4 durable --join
sleep 1
log "catch-up: writes for ${CATCHUP_BENCH_SECS}s, node 4 added as a learner"
bench --clients "$CATCHUP_CLIENTS" --value-size "$VALUE_SIZE" --keys "$KEYS" \
  --duration "${CATCHUP_BENCH_SECS}s" --json "$OUT/catchup-during.json" \
  >"$OUT/catchup-during.txt" &
BENCH_PID=$!
sleep 2
T_ADD=$(now_ms)
"$BIN" member add 4 --peer-addr "127.0.0.1:$(peer_port 4)" \
  --client-addr "127.0.0.1:$(client_port 4)" --learner --endpoints "$ENDPOINTS"
T_INSTALLED="" T_CAUGHT=""
while [[ -z "$T_CAUGHT" ]]; do
  if [[ -z "$T_INSTALLED" && $(metric 4 raft_snapshots_installed_total) != 0 ]]; then
    T_INSTALLED=$(now_ms)
  fi
  if [[ -n "$T_INSTALLED" ]]; then
    lc=$(status_field "$LEADER" commit_index)
    a4=$(status_field 4 applied_index)
    if [[ -n "$a4" && -n "$lc" && "$a4" != null ]] && ((a4 + 100 >= lc)); then
      T_CAUGHT=$(now_ms)
    fi
  fi
  if (($(now_ms) - T_ADD > 900000)); then
    log "node 4 not caught up after 900 s"
    break
  fi
  sleep 0.1
done
wait "$BENCH_PID" || true
{
  echo "leader=$LEADER"
  echo "add_unix_ms=$T_ADD"
  echo "installed_unix_ms=${T_INSTALLED:-0}"
  echo "caught_up_unix_ms=${T_CAUGHT:-0}"
  echo "bench_during_end_unix_ms=$(now_ms)"
  echo "leader_state_redb_bytes=$(stat -c %s "$D/node-$LEADER/kv/state.redb")"
  echo "node4_state_redb_bytes=$(stat -c %s "$D/node-4/kv/state.redb" 2>/dev/null || echo 0)"
  echo "snapshots_installed_node4=$(metric 4 raft_snapshots_installed_total)"
} | tee "$OUT/catchup.txt"
sleep 5
echo "load after catch-up: $(uptime)" | tee -a "$OUT/env.txt"
CATCHUP_END_MS=$(now_ms)
stop_all
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=""
for i in 1 2 3 4; do cp "$D/node-$i/server.log" "$OUT/fill-node-$i.log"; done
rm -rf "$D"

# ---- (e): small values, durable vs memory -----------------------------------
if [[ -z "${SKIP_SMALL:-}" ]]; then
  for round in $(seq 1 "$SMALL_ROUNDS"); do
    for engine in durable memory; do
      S=$WORK/small-$engine
      rm -rf "$S"
      for i in 1 2 3; do start_node "$S" "$i" "$engine"; done
      for i in 1 2 3; do wait_ready "$i" 60; done
      log "small values: $engine engine, round $round, ${SMALL_SECS}s"
      bench --clients 64 --duration "${SMALL_SECS}s" \
        --json "$OUT/small-$engine-$round.json" >"$OUT/small-$engine-$round.txt"
      echo "load after small $engine $round: $(uptime)" >>"$OUT/env.txt"
      stop_all
      rm -rf "$S"
    done
  done
fi

# ---- summary -----------------------------------------------------------------
python3 - "$OUT" "$FILL_START_MS" "$FILL_END_MS" "$IDLE_END_MS" "$CATCHUP_END_MS" <<'EOF' | tee "$OUT/summary.txt"
import json, sys, os, glob, datetime
out, fill_start, fill_end, idle_end, catchup_end = sys.argv[1], *map(int, sys.argv[2:])

def ts_ms(s):
    # RFC 3339 with up to nanoseconds and a Z.
    s = s.rstrip("Z")
    base, _, frac = s.partition(".")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000) + int((frac + "000")[:3] or 0)

def events(path):
    """(unix_ms, message, fields) of a JSON log."""
    for line in open(path, errors="replace"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        f = dict(e.get("fields", {}))
        f.update({k: v for k, v in e.items() if k not in ("fields",)})
        yield ts_ms(e["timestamp"]), f.get("message", ""), f

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0

fill = json.load(open(f"{out}/fill.json"))
f = fill["fill"]
print("== (a) fill")
print(f"{f['keys']} keys in {f['secs']:.1f} s: {f['throughput_per_sec']:.0f} writes/s, p50 {f['p50_us']/1e3:.1f} ms, "
      f"p99 {f['p99_us']/1e3:.1f} ms, p99.9 {f['p999_us']/1e3:.1f} ms, max {f['max_us']/1e3:.1f} ms, "
      f"{f['over_100ms']} over 100 ms, {f['keys_failed']} keys failed, errors {f['errors']}")
for d in f["deciles"]:
    print(f"  decile {d['decile']}: {d['throughput_per_sec']:8.0f}/s p50 {d['p50_us']/1e3:6.1f} p99 {d['p99_us']/1e3:6.1f} "
          f"p99.9 {d['p999_us']/1e3:7.1f} max {d['max_us']/1e3:7.1f} ms, >100ms {d['over_100ms']}")
print(f"last vs first decile: throughput x{f['last_vs_first_throughput']:.3f}, p99.9 x{f['last_vs_first_p999']:.3f} (target: within 20%)")
w = fill["writes"]
print(f"after the fill, {fill['duration_secs']:.0f} s of writes on the {f['keys']} keys: {w['throughput_per_sec']:.0f}/s "
      f"p99 {w['p99_us']/1e3:.1f} ms p99.9 {w['p999_us']/1e3:.1f} ms max {w['max_us']/1e3:.1f} ms, errors {fill['errors']}")

# Checkpoints (every node): [end - elapsed, end], and the durable marks.
cps = {}
for path in sorted(glob.glob(f"{out}/fill-node-*.log")):
    node = int(path.rsplit("-", 1)[1].split(".")[0])
    for t, msg, fl in events(path):
        if msg == "checkpoint" and "elapsed_ms" in fl and t <= fill_end:
            cps.setdefault(node, []).append((t - int(fl["elapsed_ms"]), t))
fill_phase_end = fill_start + int(f["secs"] * 1000)
for node, iv in sorted(cps.items()):
    for name, d in (("fill", [b - a for a, b in iv if b <= fill_phase_end]),
                    ("keep-writing", [b - a for a, b in iv if b > fill_phase_end])):
        if d:
            print(f"node {node}: {len(d)} checkpoints in the {name} phase, duration p50 {pct(d, .5)} ms, "
                  f"max {max(d)} ms, total {sum(d)/1e3:.1f} s (applies wait meanwhile)")
slow = f["slow_requests"]
def overlaps(s, ivs, slack=0):
    a, b = s["start_unix_ms"], s["start_unix_ms"] + s["latency_ms"]
    return any(x - slack <= b and a <= y + slack for x, y in ivs)
all_iv = [x for iv in cps.values() for x in iv]
n_any = sum(overlaps(s, all_iv) for s in slow)
print(f"writes over 100 ms in the fill: {f['over_100ms']} (listed {len(slow)}); overlapping a checkpoint of some node: {n_any}")
for node, iv in sorted(cps.items()):
    print(f"  overlapping a checkpoint of node {node}: {sum(overlaps(s, iv) for s in slow)}")
if slow:
    lat = [s["latency_ms"] for s in slow]
    print(f"  slow writes' latency p50 {pct(lat, .5):.0f} ms, max {max(lat):.0f} ms; first at +{(slow[0]['start_unix_ms']-fill_start)/1e3:.1f} s")
    # Group into stalls (slow writes within 1 s of each other).
    stalls, cur = [], [slow[0]]
    for s in slow[1:]:
        if s["start_unix_ms"] - cur[-1]["start_unix_ms"] <= 1000:
            cur.append(s)
        else:
            stalls.append(cur); cur = [s]
    stalls.append(cur)
    print(f"  in {len(stalls)} stalls; the 10 worst:")
    for st in sorted(stalls, key=lambda st: -max(x['latency_ms'] for x in st))[:10]:
        a = st[0]["start_unix_ms"]
        m = max(x["latency_ms"] for x in st)
        ov = [n for n, iv in sorted(cps.items()) if any(overlaps(x, iv) for x in st)]
        print(f"    +{(a-fill_start)/1e3:7.1f} s: {len(st)} writes, worst {m:.0f} ms, checkpoint overlapping on nodes {ov}")

print("== (d) RSS (MiB)")
rss = {}
for line in open(f"{out}/rss.csv").read().splitlines()[1:]:
    t, node, kib = map(int, line.split(","))
    rss.setdefault(node, []).append((t, kib / 1024))
fill_phase_end = fill_start + int(f["secs"] * 1000)
for node, xs in sorted(rss.items()):
    during = [v for t, v in xs if t <= fill_phase_end]
    keep = [v for t, v in xs if fill_phase_end < t <= fill_end]
    idle = [v for t, v in xs if fill_end < t <= idle_end]
    later = [v for t, v in xs if t > idle_end]
    fmt = lambda v: f"{max(v):.0f}" if v else "-"
    print(f"node {node}: fill max {fmt(during)}, keep-writing max {fmt(keep)}, idle after {idle[-1] if idle else 0:.0f}, "
          f"restart/catch-up max {fmt(later)}, last {xs[-1][1]:.0f}")
print(open(f"{out}/sizes.txt").read().rstrip())

print("== (b) restart")
print(open(f"{out}/restart.txt").read().rstrip())

print("== (c) learner catch-up")
c = dict(l.split("=", 1) for l in open(f"{out}/catchup.txt").read().split())
add = int(c["add_unix_ms"])
# Each transfer starts at the add (the first) or when node 4 installed
# the previous one (the leader starts the next one then); it ends when
# node 4 has received every byte (durable beside its state).
sent, received, installed, refused = [], [], [], 0
for path in sorted(glob.glob(f"{out}/fill-node-*.log")):
    node = int(path.rsplit("-", 1)[1].split(".")[0])
    for t, msg, fl in events(path):
        if t < add - 5000:
            continue
        if node == 4 and msg == "snapshot received":
            received.append((t, int(fl.get("bytes", 0))))
        elif node == 4 and msg == "snapshot installed from leader":
            installed.append(t)
        elif msg == "snapshot streamed":
            sent.append((t, int(fl.get("bytes", 0))))
        elif msg == "snapshot stream failed":
            refused += 1
starts = [add] + installed
for i, (t, b) in enumerate(received):
    start = starts[i] if i < len(starts) else add
    s_end = next((st for st, sb in sent if sb == b), None)
    sender = f", the leader done sending at +{(s_end-start)/1e3:.1f} s" if s_end else ""
    print(f"transfer {i+1}: {b/1e6:.0f} MB received in {(t-start)/1e3:.1f} s = {b/max(1,t-start)*1000/1e6:.1f} MB/s{sender}"
          f"{', installed +%.1f s' % ((installed[i]-t)/1e3) if i < len(installed) else ''}")
print(f"streams the leader opened that node 4 refused (one in progress): {refused}")
inst, caught = int(c["installed_unix_ms"]), int(c["caught_up_unix_ms"])
print(f"snapshot installed at +{(inst-add)/1e3:.2f} s, caught up (applied within 100 of the leader's commit) at +{(caught-add)/1e3:.2f} s; "
      f"leader's state.redb {int(c['leader_state_redb_bytes'])/1e6:.0f} MB, node 4's {int(c['node4_state_redb_bytes'])/1e6:.0f} MB, "
      f"snapshots installed on node 4: {c['snapshots_installed_node4']}")
for name in ("baseline", "during"):
    j = json.load(open(f"{out}/catchup-{name}.json"))
    w = j["writes"]
    print(f"leader writes {name}: {w['throughput_per_sec']:.0f}/s p50 {w['p50_us']/1e3:.1f} p99 {w['p99_us']/1e3:.1f} "
          f"p99.9 {w['p999_us']/1e3:.1f} max {w['max_us']/1e3:.1f} ms over {j['duration_secs']:.0f} s, errors {j['errors']}")
end_during = int(c["bench_during_end_unix_ms"])
if caught and caught > end_during:
    print("note: the catch-up outlasted the 'during' bench")

print("== (e) small values, 64 clients, 100 B, 10,000 keys")
res = {}
for path in sorted(glob.glob(f"{out}/small-*.json")):
    engine, rnd = os.path.basename(path)[6:-5].rsplit("-", 1)
    j = json.load(open(path))
    w = j["writes"]
    res.setdefault(engine, []).append(w["throughput_per_sec"])
    print(f"{engine} round {rnd}: {w['throughput_per_sec']:.0f} writes/s p50 {w['p50_us']/1e3:.2f} p99 {w['p99_us']/1e3:.2f} ms, errors {j['errors']}")
if "durable" in res and "memory" in res:
    d, m = sum(res["durable"]) / len(res["durable"]), sum(res["memory"]) / len(res["memory"])
    print(f"durable / memory throughput: {d:.0f} / {m:.0f} = {d/m:.3f} (target >= 0.9)")
print("== load")
print(open(f"{out}/env.txt").read().rstrip())
EOF
log "results in $OUT"
