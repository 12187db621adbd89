#!/usr/bin/env bash
# A flooding trunk cannot starve the others (issue 9). On loopback, with the shipped lab
# configuration (release build, default limits; gw1 is the lab's load generator):
#   - sipp as the cloud peer answers every call (127.0.0.3:5060);
#   - gw1 (sipp, 127.0.0.2) places CALLS calls at RATE calls/s;
#   - meanwhile gw2 (127.0.0.5) floods new INVITEs at FLOOD/s for SECONDS s
#     (benches/flood_invites.py: no ACK, no retransmission, answers counted);
#   - the appliance's peak RSS is sampled; 10 s after the flood, gw1 places 300 calls at
#     100/s again.
# Usage: benches/flood.sh [FLOOD=20000] [SECONDS=15] [RATE=100] [CALLS=1500]
# Bounded: every process is on 127.0.0.0/8 and killed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOD=${1:-20000}
SECS=${2:-15}
RATE=${3:-100}
CALLS=${4:-1500}
cargo build --release -q
# The lab's addresses are shared with the integration tests (and other checkouts on the
# machine): hold the same lock they do (tests/common: an flock on this file).
exec 9>>/tmp/sipedge-lab.lock
flock 9
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  pkill -f "sipp -sf .*tests/sipp/uas.xml -i 127.0.0.3" 2>/dev/null || true
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cfg="$work/sipedge.toml"
sed -e "s#state_dir = \"../state\"#state_dir = \"$work/state\"#" config/sipedge.toml > "$cfg"
"${CARGO_TARGET_DIR:-target}"/release/sipedge --config "$cfg" run 2>"$work/sipedge.log" &
pid=$!
for _ in $(seq 1 100); do
  grep -q "sipedge running" "$work/sipedge.log" 2>/dev/null && break
  sleep 0.2
done
grep -q "sipedge running" "$work/sipedge.log" || { cat "$work/sipedge.log" >&2; exit 1; }
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/uas.xml" -i 127.0.0.3 -p 5060 -t u1 -nostdin \
   >/dev/null 2>&1 &)
sleep 0.5

peak=0
sample_rss() {
  while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$(cat "$work/peak" 2>/dev/null || echo 0)" ] && echo "$r" > "$work/peak"
    sleep 0.25
  done
}
echo 0 > "$work/peak"
sample_rss &

summary() { # csv file -> "successful failed"
  python3 - "$1" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')])
PY
}

mkdir -p "$work/calm" "$work/after"
(cd "$work/calm" && sipp -sf "$OLDPWD/tests/sipp/uac.xml" -i 127.0.0.2 -p 5060 -t u1 \
   -s +14255550100 -set domain mediation.lab.example -r "$RATE" -m "$CALLS" -l 5000 \
   -recv_timeout 20000 -timeout 120 -nostdin -trace_stat -fd 1 127.0.0.1:5068 \
   >/dev/null 2>&1) &
calm=$!
sleep 1
python3 benches/flood_invites.py 127.0.0.5 127.0.0.1:5068 "$FLOOD" "$SECS" | tee "$work/flood.txt"
wait "$calm" || true
read -r ok1 fail1 < <(summary "$(ls "$work"/calm/uac_*_.csv | head -1)")
echo "gw1 during the flood: $ok1 successful, $fail1 failed of $CALLS at $RATE calls/s"
echo "sipedge peak RSS during the flood: $(( $(cat "$work/peak") / 1024 )) MB"
sleep 10
(cd "$work/after" && sipp -sf "$OLDPWD/tests/sipp/uac.xml" -i 127.0.0.2 -p 5060 -t u1 \
   -s +14255550100 -set domain mediation.lab.example -r 100 -m 300 -l 5000 \
   -recv_timeout 20000 -timeout 60 -nostdin -trace_stat -fd 1 127.0.0.1:5068 \
   >/dev/null 2>&1) || true
read -r ok2 fail2 < <(summary "$(ls "$work"/after/uac_*_.csv | head -1)")
echo "gw1 10 s after the flood: $ok2 successful, $fail2 failed of 300 at 100 calls/s"
grep -c "overload" "$work/sipedge.log" | xargs echo "log lines mentioning overload:"
