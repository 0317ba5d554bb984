#!/usr/bin/env bash
# Jobs of many local nodes over tcp, with the release binaries: 64 and 128 ranks run litmus
# scenarios on pages every node shares (past the 52 ranks a directory word names exactly):
# message passing through a barrier, false sharing of one page, a counter under a lock; then a
# rank killed in a 128-node job stops the job within a bounded time, named by the launcher or
# by the ranks that lost it.
# Every job has a hard timeout (dsmrun's, and `timeout` around it).
#   scripts/scale-test.sh                 64 and 128 nodes
#   DSM_SCALE_NODES="64 128 256" scripts/scale-test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "scale-test: FAILED: $*" >&2; exit 1; }
cargo build --locked --release -q -p dsm-launcher -p tests --bins || fail "cannot build"
B=target/release
export DSM_GLOBAL_SIZE=256M
for n in ${DSM_SCALE_NODES:-64 128}; do
  for s in mp-barrier false-sharing counter-lock; do
    t0=$SECONDS
    out=$(timeout -k 5 600 "$B/dsmrun" -n "$n" --transport tcp --timeout 540 "$B/dsm-litmus" "$s" 2>&1) ||
      { echo "$out" | tail -20; fail "$s on $n nodes"; }
    ok=$(grep -c ": $s ok$" <<<"$out")
    [ "$ok" = "$n" ] || { echo "$out" | tail -20; fail "$s on $n nodes: $ok of $n ranks said ok"; }
    echo "scale-test: $s on $n nodes ok ($((SECONDS - t0)) s)"
  done
done
n=128
t0=$SECONDS
out=$(timeout -k 5 300 "$B/dsmrun" -n $n --transport tcp --timeout 240 "$B/dsm-litmus" vanish 2>&1)
rc=$?
took=$((SECONDS - t0))
[ $rc -ne 0 ] || fail "vanish on $n nodes: the job passed although rank $((n - 1)) was killed"
[ $rc -ne 124 ] || fail "vanish on $n nodes: the job ran into its timeout (not stopped in bounded time)"
# The launcher names the first end it sees (the victim, or a survivor that stopped on losing
# it); the survivors name the victim.
grep -Eq "dsmrun: rank $((n - 1)) was killed by signal 9|dsm: rank [0-9]+: lost rank $((n - 1)) " <<<"$out" ||
  { echo "$out" | grep -v ERROR | tail -20; fail "vanish on $n nodes: the killed rank is not named"; }
echo "scale-test: rank $((n - 1)) killed in a $n-node job: stopped and named in $took s (exit $rc)"
echo "scale-test: all passed"
