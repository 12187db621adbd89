#!/usr/bin/env bash
# Side by side, in one run: the same sipp load through sipedge and through Kamailio (the peer
# we measure against), gw1 (127.0.0.2) -> proxy on 127.0.0.1:5068 -> cloud peer (127.0.0.3).
# Reports each proxy's CPU time for the run (all its processes) and the ratio.
# sipedge runs the shipped lab configuration as shipped (info logs, [media] on) — the defaults
# are the product; MODE=nomedia drops the [media] section (signalling only, as Kamailio here).
# Usage: benches/compare_kamailio.sh [RATE] [CALLS] [MODE=defaults|nomedia]
#        (needs sipp and kamailio installed)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-400}
CALLS=${2:-4000}
MODE=${3:-defaults}
command -v kamailio >/dev/null || { echo "kamailio not installed (apt-get install kamailio)"; exit 2; }
cargo build --release -q
# The lab's addresses are shared with the integration tests (and other checkouts on the
# machine): hold the same lock they do (tests/common: an flock on this file).
exec 9>>/tmp/sipedge-lab.lock
flock 9
work=$(mktemp -d)
# Every step `|| true`: under `set -e` a pkill matching nothing would end the trap early and
# leave Kamailio holding the lab's ports.
cleanup() {
  pkill -P $$ 2>/dev/null || true
  pkill -f "tests/sipp/uas.xml -i 127.0.0.3" 2>/dev/null || true
  [ -f "$work/kam.pid" ] && kill "$(cat "$work/kam.pid")" 2>/dev/null || true
  pkill -f "f benches/kamailio/kamailio.cfg -P $work" 2>/dev/null || true
  for _ in $(seq 1 50); do pgrep -f "kamailio.cfg -P $work" >/dev/null || break; sleep 0.1; done
  pkill -KILL -f "kamailio.cfg -P $work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
sed -e "s#state_dir = \"../state\"#state_dir = \"$work/state\"#" config/sipedge.toml > "$work/sipedge.toml"
if [ "$MODE" = nomedia ]; then
  # Drop the [media] table (up to the next table header).
  awk '/^\[media\]/{skip=1; next} /^\[/{skip=0} !skip' "$work/sipedge.toml" > "$work/s.toml"
  mv "$work/s.toml" "$work/sipedge.toml"
fi

cpu_ms() { # total user+sys CPU of the given pids, in ms
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done
  echo $(( t * 1000 / $(getconf CLK_TCK) ))
}

run_load() { # $1 = label, remaining = pids to measure
  local label=$1; shift
  (cd "$work" && sipp -sf "$OLDPWD/tests/sipp/uas.xml" -i 127.0.0.3 -p 5060 -t u1 -nostdin >/dev/null 2>&1 &)
  sleep 0.3
  local before; before=$(cpu_ms "$@")
  local ok=0
  (cd "$work" && sipp -sf "$OLDPWD/tests/sipp/uac.xml" -i 127.0.0.2 -p 5060 -t u1 -s +14255550100 \
     -set domain mediation.lab.example -r "$RATE" -m "$CALLS" -l 5000 -recv_timeout 20000 \
     -timeout 300 -timeout_error -nostdin -trace_stat -fd 1 127.0.0.1:5068 >/dev/null 2>&1) || ok=$?
  local after; after=$(cpu_ms "$@")
  pkill -f "tests/sipp/uas.xml -i 127.0.0.3" || true; sleep 0.3
  local stat; stat=$(ls -t "$work"/uac_*_.csv | head -1)
  local res; res=$(python3 - "$stat" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
print(f"{last[h.index('SuccessfulCall(C)')]} ok / {last[h.index('FailedCall(C)')]} failed")
PY
)
  echo "$label: $res, CPU $((after - before)) ms for $CALLS calls (sipp exit $ok)"
  echo $((after - before)) > "$work/$label.cpu"
  rm -f "$work"/uac_*_.csv
}

"${CARGO_TARGET_DIR:-target}"/release/sipedge --config "$work/sipedge.toml" run 2>"$work/sipedge.log" &
se=$!
sleep 0.5
run_load sipedge "$se"
kill -TERM "$se"
# The drain ends with the last call; bounded all the same.
for _ in $(seq 1 100); do kill -0 "$se" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$se" 2>/dev/null || true
wait "$se" 2>/dev/null || true

# Shared memory sized for the run (the package default, 64 MB, runs out of transactions).
kamailio -m 1024 -M 32 -f benches/kamailio/kamailio.cfg -P "$work/kam.pid" -E -w "$work" 2>"$work/kam.log"
sleep 1
run_load kamailio $(pgrep -f "f benches/kamailio/kamailio.cfg -P")
s=$(cat "$work/sipedge.cpu"); k=$(cat "$work/kamailio.cpu")
python3 -c "print(f'mode $MODE, $RATE calls/s x $CALLS: sipedge {$s*1000/$CALLS:.0f} us/call, kamailio {$k*1000/$CALLS:.0f} us/call, sipedge/kamailio {$s/max($k,1):.2f}x')"
