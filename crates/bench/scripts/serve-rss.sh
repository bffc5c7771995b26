#!/bin/bash
# serve's memory with --state vs with --store, same simulated fleet: VmRSS (split into
# anonymous and file-backed pages) after three polls, and the peak VmHWM, each also per
# connection. Read before anything asks for /v1/report (whose body is built on demand);
# the connections are counted from /v1/summary. BIN=target/release for release binaries,
# PORT to move the listener. The fleet is all three providers (N customers each, ~18.3
# connections per customer: 20000 is the issue's ~367k); NO_SUBTOTAL=1 leaves Subtotal out.
# The binary purges freed memory at once unless MIMALLOC_PURGE_DELAY is set (e.g. 1000, mimalloc's
# default, to measure as before that change).

BIN=${BIN:-target/debug}
PORT=${PORT:-18937}
# INTERVAL=60s reads the memory between polls (the default 5s reads it while polls overlap).
INTERVAL=${INTERVAL:-5s}
N=${1:-2000}
$BIN/connhealth-sim --customers $N > sim.out 2>sim.err &
SIM=$!
trap "kill $SIM 2>/dev/null" EXIT
for i in $(seq 100); do [ -s sim.out ] && break; sleep 0.2; done
# The line is read from the file (with Subtotal's customers it is too long for an argument).
py() { python3 -c "import json;d=json.loads(open('sim.out').readline());print($1)"; }
export C3=$(py 'd["channel3"]["api_key"]') VS=$(py 'd["violet"]["app_secret"]') VU=$(py 'd["violet"]["username"]') VP=$(py 'd["violet"]["password"]') ST=$(py 'd["subtotal"]["api_key"]')
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
# All three providers (the issue's fleet) unless NO_SUBTOTAL=1 (Channel3 + Violet, as rounds
# one and two measured): Subtotal cannot list customers, so the config names the sim's.
if [ -z "$NO_SUBTOTAL" ]; then
cat >> c.toml <<T
[[provider]]
kind = "subtotal"
base_url = "$(py 'd["subtotal"]["base_url"]')"
api_key_env = "ST"
customers = $(py 'json.dumps(d["subtotal"]["customers"])')
T
fi
measure() {
  rm -f s.json .s.json.lock connhealth.db* .connhealth.db.lock
  $BIN/connhealth serve --config c.toml --listen 127.0.0.1:$PORT --interval $INTERVAL "$@" 2>serve.err &
  P=$!
  st() { grep "^$1:" /proc/$P/status | awk '{print $2}'; }
  # The first poll (until /readyz answers) is read every 0.25 s too, into first.samples:
  # it holds the peak of a new store (every connection new, each with its event).
  : > first.samples
  for i in $(seq 2400); do
    st VmRSS >> first.samples
    curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break
    sleep 0.25
  done
  # Two more polls at 5s (SETTLE=N to wait otherwise), reading VmRSS every 0.25 s meanwhile:
  # one reading can fall between polls or inside one, so the spread is reported too.
  : > rss.samples
  end=$(( $(date +%s) + ${SETTLE:-12} ))
  while [ $(date +%s) -lt $end ]; do st VmRSS >> rss.samples; sleep 0.25; done
  rss=$(st VmRSS) anon=$(st RssAnon) file=$(st RssFile) hwm=$(st VmHWM)
  n=$(curl -s http://127.0.0.1:$PORT/v1/summary | python3 -c "import json,sys;print(json.load(sys.stdin)['summary']['total'])")
  kill -INT $P; wait $P || true
  echo "$* connections=$n VmRSS_kB=$rss RssAnon_kB=$anon RssFile_kB=$file VmHWM_kB=$hwm"
  python3 -c "n=$n;print('  per connection: VmRSS %.2f KB, RssAnon %.2f KB, VmHWM %.2f KB (target 1.2 KB: VmRSS %.2fx, VmHWM %.2fx)' % ($rss*1.024/n, $anon*1.024/n, $hwm*1.024/n, $rss*1.024/n/1.2, $hwm*1.024/n/1.2))"
  python3 - $n <<'PY'
import sys, statistics
n = int(sys.argv[1])
s = sorted(int(l) * 1.024 / n for l in open("rss.samples") if l.strip())
if s:
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]
    print("  VmRSS per connection over %d readings: min %.2f, median %.2f, p90 %.2f, max %.2f KB (max / 1.2 KB target: %.2fx)"
          % (len(s), s[0], statistics.median(s), q(0.9), s[-1], s[-1] / 1.2))
f = [int(l) * 1.024 / n for l in open("first.samples") if l.strip()]
if f:
    print("  first poll: ready after ~%.1f s; VmRSS per connection meanwhile: max %.2f KB, at ready %.2f KB"
          % (len(f) * 0.25, max(f), f[-1]))
    print("  first poll, every second: " + " ".join("%.2f" % x for x in f[::4]))
PY
}
[ -z "$ONLY_STORE" ] && measure --state s.json
measure --store sqlite://connhealth.db
