#!/usr/bin/env bash
# The RDMA tests on soft-RoCE: builds on the host, then in ONE boot of the soft-RoCE guest
# (scripts/softroce-vm.sh) runs the transport crate's verbs tests and conformance suite, and
# with --bench the transport benchmark over verbs beside perftest's floor, as medians of
# several runs, printed as ratios.
#
#   scripts/test-softroce.sh [--bench] [--runs N] [--timeout SECS]
#
# Exit status: the tests' (0 when all pass), 124 on timeout, 125 when the guest could not start.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
BENCH=0 RUNS=3 TIMEOUT=1200
while [ $# -gt 0 ]; do
  case $1 in
    --bench) BENCH=1; shift;;
    --runs) RUNS=$2; shift 2;;
    --timeout) TIMEOUT=$2; shift 2;;
    *) echo "test-softroce: unknown option $1" >&2; exit 2;;
  esac
done
T0=$(date +%s)
say() { echo "test-softroce: $*"; }

say "building the test binaries on the host"
bins=$(cargo test --locked -p transport --test conformance --test verbs --test verbs_pinning --no-run 2>&1 |
       sed -n 's/.*Executable .*(\(.*\))$/\1/p')
[ -n "$bins" ] || { say "could not find the test binaries"; exit 1; }
TARGET=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
         sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET=${TARGET:-target}
# One build command (one feature resolution, so dsm-core is built once).
if [ $BENCH = 1 ]; then
  cargo build --locked --release -p dsm-core -p dsm-launcher -p tests -p benches -p mpi-compat --bins
else
  cargo build --locked --release -p dsm-core -p dsm-launcher -p tests --bins
fi

GUEST=$(mktemp -t dsm-softroce-guest.XXXXXX.sh)
trap 'rm -f "$GUEST"' EXIT
{
  echo '#!/bin/bash'
  echo 'set -u; export DSM_REQUIRE_RDMA=1; status=0'
  echo 'echo "== guest: $(rdma link show 2>/dev/null | head -1)"'
  echo 'echo "== guest: rxe0 on-demand paging: $(ibv_devinfo -v -d rxe0 2>/dev/null | grep -iE "odp|on.demand" | tr -s " \t" " " | head -3 | paste -sd";" - || true)"'
  for b in $bins; do
    # The conformance binary holds every backend's suite: only its verbs module here. The
    # verbs binary's tests run whole.
    filter=""; case $(basename "$b") in conformance-*) filter=verbs;; esac
    printf 'echo "== guest: %s %s"\n' "$(basename "$b")" "$filter"
    printf 'timeout 600 %q --test-threads=1 %s || status=1\n' "$b" "$filter"
  done
  # The shared memory over RDMA: the memory-model litmus tests, 2 nodes, the default global
  # range (4 GiB: registration follows use, so a 2 GiB guest holds it).
  cat <<LITMUS
T=$TARGET/release
for s in mp-barrier mp-lock counter-lock false-sharing atomics store-buffering first-touch big-array; do
  echo "== guest: dsm-litmus \$s over verbs"
  DSM_TRANSPORT=verbs DSM_CACHE_SIZE=256K timeout 300 \$T/dsmrun -n 2 --timeout 240 \$T/dsm-litmus \$s || status=1
done
# The MPI-style layer over RDMA: point-to-point, collectives, every RMA operation and mode.
echo "== guest: mpi-check over verbs"
DSM_TRANSPORT=verbs DSM_GLOBAL_SIZE=64M timeout 300 \$T/dsmrun -n 2 --timeout 240 \$T/mpi-check p2p nonblocking collectives rma pscw created raw errors split threads || status=1
# Checkpoint and restart over RDMA: rank 1 killed mid-run, dsmrun restarts the job from its
# newest checkpoint, and the result has the same bits as a run without failure.
echo "== guest: checkpoint and restart over verbs (rank 1 killed, --max-restarts)"
ck() { DSM_TRANSPORT=verbs DSM_GLOBAL_SIZE=64M DSM_CHECKPOINT_DIR=/tmp/\$1/%r timeout 300 \$T/dsmrun -n 2 --timeout 240 "\${@:2}" \$T/dsm-restart stencil 200 10 2>&1; }
ref=\$(ck ckref | grep -o 'result [0-9a-f]*')
got=\$(DSM_TEST_KILL=1:300 ck ck --max-restarts 2)
if [ -n "\$ref" ] && grep -q "\$ref after 200 steps" <<<"\$got"; then
  echo "   ok: \$ref; \$(grep -c 'restart 1 of 2' <<<"\$got") restart(s)"
else echo "\$got" | tail; echo "== guest: checkpoint and restart over verbs: FAILED"; status=1; fi
LITMUS
  # One backend per peer: four ranks started by hand in two UTS namespaces with host names of
  # their own (two "hosts"), under DSM_TRANSPORT=auto: shared memory inside a host, verbs
  # across, every atomic over verbs. Each rank's choice per peer is asserted.
  cat <<'MIXED'
echo "== guest: 4 ranks on two host names, DSM_TRANSPORT=auto (shm inside a host, verbs across)"
mixed4() { # scenario -> 0 when every rank passes and chose shm/verbs as it should
  local secret pids=() r st=0
  secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  for r in 3 2 1 0; do
    DSM_TRANSPORT=auto DSM_STATS=1 DSM_GLOBAL_SIZE=256M DSM_RANK=$r DSM_NODES=4 \
      DSM_COORDINATOR=127.0.0.1:47393 DSM_SECRET=$secret \
      timeout -k 5 200 unshare --uts sh -c 'hostname "$0" && exec "$@"' "host$((r / 2))" \
      $T/dsm-litmus "$1" > /tmp/mixed.$r 2>&1 &
    pids[r]=$!
  done
  for r in 0 1 2 3; do wait ${pids[r]} || { st=1; echo "   rank $r failed:"; tail -5 /tmp/mixed.$r; }; done
  local want=("1 shm, 2 verbs, 3 verbs" "0 shm, 2 verbs, 3 verbs" "0 verbs, 1 verbs, 3 shm" "0 verbs, 1 verbs, 2 shm")
  for r in 0 1 2 3; do
    grep -q "rank $r: transport per peer: ${want[r]}\$" /tmp/mixed.$r ||
      { st=1; echo "   rank $r did not choose ${want[r]}:"; grep 'transport' /tmp/mixed.$r; }
  done
  return $st
}
for s in mp-lock counter-lock false-sharing atomics mp-barrier; do
  if mixed4 $s; then echo "   ok: $s ($(grep -h ' ok' /tmp/mixed.0 | head -1))"
  else echo "== guest: mixed shm and verbs, $s: FAILED"; status=1; fi
done
MIXED
  # Bad input over verbs, each with a hard timeout and its output asserted.
  cat <<'BAD'
expect() { # name rc-wanted(0|fail|crash) out rc patterns...: checks one bad-input step
  local name=$1 want=$2 out=$3 rc=$4; shift 4
  local ok=1
  case $want in
    0) [ "$rc" -eq 0 ] || ok=0;;
    fail) { [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -lt 128 ]; } || ok=0;;
    # A fault that cannot be resolved ends its process as a segmentation fault would (after
    # the error line); SIGKILL (the OOM killer) does not count.
    crash) { [ "$rc" -gt 128 ] && [ "$rc" -ne 137 ]; } || ok=0;;
  esac
  for pat in "$@"; do grep -qiE -- "$pat" <<<"$out" || { ok=0; echo "   missing: $pat"; }; done
  if [ $ok = 1 ]; then
    grep -iE -- "$1" <<<"$out" | head -1 | cut -c1-400 | sed 's/^/   said: /'
    echo "== guest: bad input: $name: ok (exit $rc)"
  else echo "$out" | tail -20; echo "== guest: bad input: $name: FAILED (exit $rc)"; status=1; fi
}
unset DSM_REQUIRE_RDMA
export DSM_GLOBAL_SIZE=64M DSM_CACHE_SIZE=256K

echo "== guest: bad input: a rank killed with SIGKILL mid-job (started by hand, not dsmrun)"
secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
t0=$(date +%s)
for r in 0 1; do
  DSM_TRANSPORT=verbs DSM_RANK=$r DSM_NODES=2 DSM_COORDINATOR=127.0.0.1:47391 DSM_SECRET=$secret \
    timeout -k 5 150 $T/dsm-litmus vanish > /tmp/vanish.$r 2>&1 &
  eval pid$r=\$!
done
wait $pid0; rc0=$?; wait $pid1; rc1=$?
out="$(cat /tmp/vanish.0 /tmp/vanish.1)"
echo "$out" | grep -E 'vanish' | sed 's/^/   /'
echo "$out" | grep -E '^dsm: rank 0' | sed 's/^/   /'
echo "   survivor exit $rc0, killed rank exit $rc1, $(( $(date +%s) - t0 )) s in all"
# The survivor either finishes the scenario (exit 0) or is stopped first by the runtime's
# watcher, which names the lost rank (exit 3); anything else (a hang: 124, a crash) fails.
[ $rc1 -eq 137 ] || { echo "   the killed rank exited $rc1, not 137 (SIGKILL)"; rc0=99; }
case $rc0 in 0|3) ;; *) echo "   the survivor exited $rc0"; rc0=99;; esac
[ $rc0 -eq 3 ] && rc0=0
expect "peer killed (kill -9)" 0 "$out" $rc0 'rank 0: vanish: atomic failed .*rank 1' 'lost rank 1'

echo "== guest: bad input: registration over the locked-memory limit (ulimit -l 64, no CAP_IPC_LOCK)"
out=$( ulimit -l 64; DSM_TRANSPORT=verbs timeout -k 5 120 \
       setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock \
       $T/dsmrun -n 2 --timeout 100 $T/dsm-litmus mp-barrier 2>&1 ); rc=$?
expect "locked-memory limit" fail "$out" $rc 'ibv_reg_mr' 'ulimit -l'
# A limit that fits start-up (the global range is registered chunk by chunk as it is used)
# but not what the job then touches: the chunk over it is refused, and the fault names why.
out=$( ulimit -l 8192; DSM_TRANSPORT=verbs timeout -k 5 120 \
       setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock \
       $T/dsmrun -n 2 --timeout 100 $T/dsm-litmus memory 2>&1 ); rc=$?
expect "touching more than the locked-memory limit" crash "$out" $rc 'ibv_reg_mr' 'could not pin the memory'
# The same under the runtime's own bound.
out=$( DSM_RDMA_PIN_MAX=8M DSM_TRANSPORT=verbs timeout -k 5 120 \
       $T/dsmrun -n 2 --timeout 100 $T/dsm-litmus memory 2>&1 ); rc=$?
expect "touching more than DSM_RDMA_PIN_MAX" crash "$out" $rc 'DSM_RDMA_PIN_MAX' 'cannot resolve a read fault'
# Registered whole (DSM_RDMA_REG_CHUNK=0), the default global range is over the limit at start.
out=$( ulimit -l 32768; DSM_RDMA_REG_CHUNK=0 DSM_TRANSPORT=verbs timeout -k 5 120 \
       setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock \
       $T/dsmrun -n 2 --timeout 100 $T/dsm-litmus mp-barrier 2>&1 ); rc=$?
expect "global range registered whole over the locked-memory limit" fail "$out" $rc 'DSM_GLOBAL_SIZE' 'ibv_reg_mr'

echo "== guest: bad input: a device whose port is down (rxe1 on a veth that is down)"
if ip link add dsmv0 type veth peer name dsmv1 && rdma link add rxe1 type rxe netdev dsmv0; then
  echo "   $(rdma link show rxe1/1)"
  out=$( DSM_RDMA_DEVICE=rxe1 timeout -k 5 120 $T/dsmrun -n 2 --transport verbs --timeout 100 \
         $T/dsm-litmus mp-barrier 2>&1 ); rc=$?
  expect "no active port, --transport verbs" fail "$out" $rc 'rxe1' 'active'
  out=$( DSM_RDMA_DEVICE=rxe1 timeout -k 5 120 $T/dsmrun -n 2 --transport auto --timeout 100 \
         $T/dsm-litmus mp-barrier 2>&1 ); rc=$?
  expect "no active port, auto falls back to shm and tcp" 0 "$out" $rc 'transport auto: using shm on this host, tcp to others' 'rxe1' 'mp-barrier ok'
  rdma link delete rxe1; ip link delete dsmv0
else
  echo "== guest: bad input: cannot create rxe1 on a veth: FAILED"; status=1
fi

# Memory over verbs: what registering the global range costs (VmPin: pinned by the NIC's
# registration), at the default global size and at 256M, against tcp. Registration follows
# use: over verbs each node pins under 64 MiB after start-up, and more once it has read 8 MiB
# from its peer (and served the peer's reads).
echo "== guest: memory use of a 2-node job (scenario memory: 8 MiB read remotely, 1 MiB cache)"
for run in "verbs default" "verbs 256M" "tcp 256M"; do
  set -- $run
  if [ "$2" = default ]; then unset DSM_GLOBAL_SIZE; else export DSM_GLOBAL_SIZE=$2; fi
  out=$( DSM_TRANSPORT=$1 DSM_CACHE_SIZE=1M timeout -k 5 200 \
         $T/dsmrun -n 2 --timeout 180 $T/dsm-litmus memory 2>&1 ); rc=$?
  echo "$out" | grep '^memory: ' | sed 's/^/   /'
  [ $rc -eq 0 ] || { echo "$out" | tail; echo "== guest: memory $run: FAILED ($rc)"; status=1; }
  if [ "$1" = verbs ]; then
    pins=$(echo "$out" | awk '/^memory: /{ r=$3; v=$(NF-1); if (/after start-up/) s[r]=v; else g[r]=v }
      END { ok=1; n=0; for (r in s) { n++; if (s[r] >= 65536 || !(g[r] > s[r])) ok=0 }; print (ok && n == 2) ? "ok" : "bad" }')
    if [ "$pins" = ok ]; then echo "   ok: pinned memory under 64 MiB at start-up, growing with use"
    else echo "== guest: memory $run: pinned memory does not follow use: FAILED"; status=1; fi
  fi
done
unset DSM_GLOBAL_SIZE DSM_CACHE_SIZE
BAD
  if [ $BENCH = 1 ]; then
    cat <<BENCH
R=$RUNS; T=$TARGET/release
# Waiters spin DSM_SPIN_US before they sleep (default 50 us, plenty on hardware). Under TCG an
# RDMA READ takes 30-100 us, so with the default most waiters sleep and pay a wake-up of about
# 100 us; perftest busy-polls without limit. Measured in this guest (transport_bench 4 KiB
# read, medians): spin 0: 200-245 us, 10: 97-102, 50: 79-142 (bimodal), 200: 76-80,
# 1000: 91 (the spinners then starve rxe's kernel work on the 2 emulated CPUs).
SPIN=200
echo "== guest: benchmark, \$R runs of each (medians), DSM_SPIN_US=\$SPIN"
# perftest: server in the background, client retried until the server listens (bounded).
perf() { # name args... -> one result line per run
  local out
  for i in \$(seq 1 20); do
    "\$@" -d rxe0 -x 1 -F >/dev/null 2>&1 & local srv=\$!
    for try in \$(seq 1 100); do
      out=\$("\$@" -d rxe0 -x 1 -F 127.0.0.1 2>/dev/null) && break
      out=""; sleep 0.2   # retry: the server takes seconds to start under emulation
    done
    [ -n "\$out" ] || kill \$srv 2>/dev/null
    wait \$srv 2>/dev/null
    [ -n "\$out" ] && { echo "\$out"; return 0; }
  done
  return 1
}
med() { sort -g | awk '{a[NR]=\$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
lat() { perf "\$@" | awk '\$1 ~ /^[0-9]+\$/ && NF >= 5 {print \$5}'; }
bw() { perf "\$@" | awk '\$1 ~ /^[0-9]+\$/ && NF >= 4 {print \$4}'; }
: > /tmp/p.read8; : > /tmp/p.read4k; : > /tmp/p.write8; : > /tmp/p.atomic; : > /tmp/p.wbw; : > /tmp/d.all; : > /tmp/f.all
for r in \$(seq 1 \$R); do
  lat ib_read_lat -s 8 -n 500 >> /tmp/p.read8
  lat ib_read_lat -s 4096 -n 500 >> /tmp/p.read4k
  lat ib_write_lat -s 8 -n 500 >> /tmp/p.write8
  lat ib_atomic_lat -n 500 >> /tmp/p.atomic
  bw ib_write_bw -s 65536 -n 200 >> /tmp/p.wbw
  DSM_TRANSPORT=verbs DSM_SPIN_US=\$SPIN timeout 300 \$T/dsmrun -n 2 --timeout 280 \$T/transport_bench --medium > /tmp/d.run 2>&1 || { cat /tmp/d.run; status=1; }
  cat /tmp/d.run >> /tmp/d.all
  # The DSM remote page fault (dsm_bench: 500 faults in random order on pages homed on rank 1).
  DSM_TRANSPORT=verbs DSM_SPIN_US=\$SPIN DSM_GLOBAL_SIZE=128M timeout 300 \$T/dsmrun -n 2 --timeout 280 \$T/dsm_bench --medium > /tmp/f.run 2>&1 || { cat /tmp/f.run; status=1; }
  cat /tmp/f.run >> /tmp/f.all
  grep -E '^(remote 4 KiB read fault|remote fault vs its transport ops)' /tmp/f.run | sed 's/^/   run '\$r': /'
done
grep -E '^# (transport|device)' /tmp/d.run
grep -E '^# (transport|fault_engine)' /tmp/f.run
dsm() { grep -F "\$1" "\${2:-/tmp/d.all}" | awk '{for (i = 3; i <= NF; i++) if (\$i == "us" || \$i == "GB/s") {print \$(i-2); break}}' | med; }
row() { # metric dsm floor unit target better
  awk -v R="\$R" -v m="\$1" -v d="\$2" -v f="\$3" -v u="\$4" -v t="\$5" -v b="\$6" 'BEGIN {
    r = (f > 0) ? d / f : 0; ok = (b == "lower") ? (r <= t) : (r >= t)
    printf "%-34s %10.2f %10.2f %6s %7.2f %s%s\n", m, d, f, u, r, (b == "lower" ? "<=" : ">="), t (ok ? " ok" : " MISS")
    printf "SOFTROCE {\\"metric\\":\\"%s\\",\\"dsm\\":%.3f,\\"perftest\\":%.3f,\\"unit\\":\\"%s\\",\\"ratio\\":%.3f,\\"target\\":%s,\\"better\\":\\"%s\\",\\"runs\\":%d}\n", m, d, f, u, r, t, b, R }'
}
printf "%-34s %10s %10s %6s %7s %s\n" "metric (median of \$R)" "dsm" "perftest" "unit" "ratio" "target"
row "read 8 B latency" "\$(dsm 'read 8 B latency')" "\$(med < /tmp/p.read8)" us 1.3 lower
row "read 4096 B latency" "\$(dsm 'read 4096 B latency')" "\$(med < /tmp/p.read4k)" us 1.3 lower
row "write 8 B latency (completion)" "\$(dsm 'write 8 B latency')" "\$(med < /tmp/p.write8)" us 2.0 lower
row "fetch_add latency" "\$(dsm 'fetch_add latency')" "\$(med < /tmp/p.atomic)" us 1.3 lower
row "DSM remote 4 KiB fault" "\$(dsm 'remote 4 KiB read fault' /tmp/f.all)" "\$(med < /tmp/p.read4k)" us 2.0 lower
row "write bandwidth 64 KiB" "\$(awk -v x="\$(dsm 'write bandwidth 64 KiB')" 'BEGIN{print x*1000}')" "\$(med < /tmp/p.wbw)" MB/s 0.8 higher
BENCH
  fi
  echo 'exit $status'
} > "$GUEST"
chmod +x "$GUEST"

# The watchdog of softroce-vm.sh: a guest that stalls before showing a sign of life is stopped
# and booted once more (and the run goes on); one that stalls twice is given up (status 125).
say "the guest watchdog: a first boot that stalls is retried"
rc=0
out=$(DSM_SOFTROCE_STALL_BOOTS=1 DSM_SOFTROCE_LIFE_TIMEOUT=30 \
      bash scripts/softroce-vm.sh --timeout 120 -- bash -c 'echo guest-ran-$((6 * 7))' 2>&1) || rc=$?
grep -q 'no sign of life within 30s: stopped it, booting once more' <<<"$out" && grep -q guest-ran-42 <<<"$out" &&
  [ $rc = 0 ] || { echo "$out"; say "FAILED: the watchdog did not retry a stalled boot (exit $rc)"; exit 1; }
rc=0
out=$(DSM_SOFTROCE_STALL_BOOTS=2 DSM_SOFTROCE_LIFE_TIMEOUT=5 \
      bash scripts/softroce-vm.sh --timeout 60 -- true 2>&1) || rc=$?
grep -q 'no sign of life within 5s, twice: giving up' <<<"$out" && [ $rc = 125 ] ||
  { echo "$out"; say "FAILED: the watchdog did not give up after two stalled boots (exit $rc)"; exit 1; }
say "the guest watchdog: ok (retries once, then gives up with 125)"

say "booting the soft-RoCE guest (QEMU, emulated: expect about a minute)"
set +e
bash scripts/softroce-vm.sh --timeout "$TIMEOUT" -- "$GUEST"
rc=$?
set -e
say "soft-RoCE stage took $(( $(date +%s) - T0 )) s (exit status $rc)"
exit $rc
