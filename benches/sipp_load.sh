#!/usr/bin/env bash
# Load test on loopback: sipp as gw1 calls through the appliance to sipp as the cloud peer.
# Usage: benches/sipp_load.sh [RATE] [CALLS] [TRANSPORT u1|t1]
# Prints sipp's summary (successful/failed calls, achieved rate) and the appliance's CPU time.
# Bounded: CALLS calls at RATE calls/s, everything on 127.0.0.0/8, killed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-500}
CALLS=${2:-5000}
T=${3:-u1}
cargo build --release -q
# The lab's addresses are shared with the integration tests (and other checkouts on the
# machine): hold the same lock they do (tests/common: an flock on this file).
exec 9>>/tmp/sipedge-lab.lock
flock 9
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "tests/sipp/uas.xml -i 127.0.0.3" 2>/dev/null; rm -rf "$work"' EXIT
cfg="$work/sipedge.toml"
sed -e "s#state_dir = \"../state\"#state_dir = \"$work/state\"#" config/sipedge.toml > "$cfg"
if [ "$T" = t1 ]; then sed -i 's/transport = "udp"/transport = "tcp"/' "$cfg"; fi
target/release/sipedge --config "$cfg" --log-level warn run 2>"$work/sipedge.log" &
pid=$!
sleep 0.5
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/uas.xml" -i 127.0.0.3 -p 5060 -t "$T" -nostdin >/dev/null 2>&1 &) || true
sleep 0.3
start_cpu=$(awk '{print $14+$15}' /proc/$pid/stat)
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/uac.xml" -i 127.0.0.2 -p 5060 -t "$T" -s +14255550100 \
   -set domain mediation.lab.example -r "$RATE" -m "$CALLS" -l 5000 -recv_timeout 20000 \
   -timeout 300 -timeout_error -nostdin -trace_stat -fd 1 127.0.0.1:5068 >/dev/null 2>&1) && ok=0 || ok=$?
end_cpu=$(awk '{print $14+$15}' /proc/$pid/stat)
stat=$(ls "$work"/uac_*_.csv 2>/dev/null | head -1)
if [ -n "$stat" ]; then
  python3 - "$stat" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
get = lambda k: last[h.index(k)]
print(f"calls: {get('SuccessfulCall(C)')} successful, {get('FailedCall(C)')} failed; "
      f"elapsed {get('ElapsedTime(C)')}; rate {float(get('CallRate(C)')):.1f} calls/s")
PY
fi
hz=$(getconf CLK_TCK)
echo "sipedge CPU: $(( (end_cpu - start_cpu) * 1000 / hz )) ms for $CALLS calls (sipp exit $ok)"
