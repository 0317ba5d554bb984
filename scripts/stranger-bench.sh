#!/usr/bin/env bash
# Start-up of a 2-node job (`dsm-litmus mp-barrier`, tcp) with and without strangers connected
# to its listening ports (issue 18): from starting rank 1 (dsmrun: from starting dsmrun) to the end
# of both ranks, best and median of --runs. Modes: dsmrun; hand (ranks started by hand, nobody
# else); coord (8 idle + 1 stranger sending a byte a second at the coordinator before rank 1
# starts); data (the same at rank 0's data listener, found through /proc).
#
#   scripts/stranger-bench.sh [--runs R] [--bin DIR] [MODE...]   (default: all four modes)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=5 BIN=target/release MODES=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    dsmrun|hand|coord|data) MODES+=("$1"); shift;;
    *) sed -n '2,9p' "$0" >&2; exit 2;;
  esac
done
[ ${#MODES[@]} -gt 0 ] || MODES=(dsmrun hand coord data)
[ "$BIN" != target/release ] || cargo build --locked --release -p dsm-core -p dsm-launcher -p tests --bins >/dev/null 2>&1 ||
  { echo "stranger-bench: build failed" >&2; exit 1; }
exec python3 - "$BIN" "$RUNS" "${MODES[@]}" <<'PY'
import glob, os, socket, statistics, subprocess, sys, threading, time

bin_dir, runs, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
LITMUS = os.path.join(bin_dir, "dsm-litmus")
SECRET = os.urandom(32).hex()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def listening_ports(pid):
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            w = line.split()
            if w[3] == "0A" and w[9] in inodes:
                ports.append(int(w[1].rsplit(":", 1)[1], 16))
    return ports


def strangers(port, stop):
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(9)]
    drip = socks[-1]

    def trickle():
        while not stop.wait(1.0):  # an attacker's pace; the stop ends it at once
            try:
                drip.send(b"D")
            except OSError:
                return
    t = threading.Thread(target=trickle); t.start()
    return socks, t


def env(rank, coordinator):
    e = {k: v for k, v in os.environ.items() if not k.startswith("DSM_")}
    e.update(DSM_RANK=str(rank), DSM_NODES="2", DSM_COORDINATOR=coordinator,
             DSM_SECRET=SECRET, DSM_TRANSPORT="tcp")
    return e


def one(mode):
    if mode == "dsmrun":
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(bin_dir, "dsmrun"), "-n", "2", "--timeout", "120",
                            LITMUS, "mp-barrier"], capture_output=True, text=True)
        return time.monotonic() - t0, r.returncode == 0, r.stdout + r.stderr
    port = free_port(); coordinator = f"127.0.0.1:{port}"
    r0 = subprocess.Popen([LITMUS, "mp-barrier"], env=env(0, coordinator),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:  # readiness: rank 0 listens (its data listener first, then the coordinator)
        ports = listening_ports(r0.pid)
        if port in ports and len(ports) >= 2:
            break
        if time.monotonic() > deadline or r0.poll() is not None:
            r0.kill(); return float("nan"), False, r0.communicate()[0]
        time.sleep(0.002)
    stop, socks, t = threading.Event(), [], None
    if mode == "coord":
        socks, t = strangers(port, stop)
    elif mode == "data":
        socks, t = strangers(next(p for p in ports if p != port), stop)
    t0 = time.monotonic()
    r1 = subprocess.Popen([LITMUS, "mp-barrier"], env=env(1, coordinator),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = r1.communicate(timeout=120)[0] + r0.communicate(timeout=120)[0]
    took = time.monotonic() - t0
    stop.set()
    if t:
        t.join()
    for s in socks:
        s.close()
    return took, r0.returncode == 0 and r1.returncode == 0, out


print(f"{'mode':8} {'runs':>4} {'failed':>6} {'best(ms)':>9} {'median(ms)':>10}")
for mode in modes:
    ok, failed = [], 0
    for _ in range(runs):
        took, good, out = one(mode)
        if good:
            ok.append(took * 1000)
        else:
            failed += 1
            print(f"stranger-bench: a {mode} run failed:\n{out}", file=sys.stderr)
    best = f"{min(ok):9.1f}" if ok else f"{'-':>9}"
    median = f"{statistics.median(ok):10.1f}" if ok else f"{'-':>10}"
    print(f"{mode:8} {runs:4} {failed:6} {best} {median}", flush=True)
PY
