#!/bin/bash
# serve's peak RSS (VmHWM) with --state vs with --store, same simulated fleet, debug binaries.

BIN=${BIN:-target/debug}
N=${1:-2000}
$BIN/connhealth-sim --customers $N > sim.out 2>sim.err &
SIM=$!
trap "kill $SIM 2>/dev/null" EXIT
for i in $(seq 100); do [ -s sim.out ] && break; sleep 0.2; done
j=$(head -1 sim.out)
py() { python3 -c "import json,sys;d=json.loads(sys.argv[1]);print($1)" "$j"; }
export C3=$(py 'd["channel3"]["api_key"]') VS=$(py 'd["violet"]["app_secret"]') VU=$(py 'd["violet"]["username"]') VP=$(py 'd["violet"]["password"]')
cat > c.toml <<T
timeout_secs = 600
[[provider]]
kind = "channel3"
base_url = "$(py 'd["channel3"]["base_url"]')"
api_key_env = "C3"
[[provider]]
kind = "violet"
base_url = "$(py 'd["violet"]["base_url"]')"
app_id = $(py 'd["violet"]["app_id"]')
app_secret_env = "VS"
username_env = "VU"
password_env = "VP"
T
measure() {
  rm -f s.json .s.json.lock connhealth.db* .connhealth.db.lock
  $BIN/connhealth serve --config c.toml --listen 127.0.0.1:18937 --interval 5s "$@" 2>serve.err &
  P=$!
  for i in $(seq 600); do curl -sf http://127.0.0.1:18937/readyz >/dev/null && break; sleep 0.5; done
  sleep 12  # two more polls
  n=$(curl -s http://127.0.0.1:18937/v1/report | python3 -c "import json,sys;print(len(json.load(sys.stdin)['connections']))")
  hwm=$(grep VmHWM /proc/$P/status | awk '{print $2}')
  kill -INT $P; wait $P || true
  echo "$* connections=$n VmHWM_kB=$hwm"
}
[ -z "$ONLY_STORE" ] && measure --state s.json
measure --store sqlite://connhealth.db
