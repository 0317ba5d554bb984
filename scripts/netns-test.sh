#!/usr/bin/env bash
# Hosts with their own addresses: one network namespace per node, joined by veth pairs to a
# bridge (itself in a namespace of its own, so the host's network is never touched), each node
# with its own address (10.199.0.R+1/24) and started by hand (DSM_RANK, DSM_NODES,
# DSM_COORDINATOR, DSM_SECRET, DSM_BIND=eth0), as on a cluster without a launcher. Runs the
# litmus programs, the mesh check, the shared-memory benchmark and a stencil across them, first
# as they are, then with `tc netem` delay (100 us and 1 ms on every node's link, each way) and
# 1% loss, and checks that every result stays correct. One more stage groups the namespaces
# into two hosts (each group with a host name of its own, `unshare --uts`) under
# DSM_TRANSPORT=auto: shared memory inside a group, tcp across (a mixed job). Prints the remote-fault latency and the
# stencil's time per sweep for each condition, and `RESULT {json}` lines.
#
#   scripts/netns-test.sh [--nodes N] [--quick] [--no-vm]
#
#   --nodes N   nodes (namespaces); default 3
#   --quick     fewer programs per condition
#   --no-vm     where the kernel has no netem, do not re-run the stages in the QEMU guest
#               (also DSM_NETNS_NO_VM=1)
#   --delay-only  only the netem delay stages (what the guest runs: the host covers the rest)
#
# Needs root (CI runs as root). Where namespaces cannot be created it skips, saying why in a
# "SKIP: " line, and exits 77; where only some conditions cannot be made (no netem, nftables,
# TUN or guest for the delay or loss stages), it runs the rest and exits 78 after passing them
# (scripts/test.sh shows both, and fails under CI).
# Loss uses netem, or nftables (`numgen random`) where the kernel has no netem. Delay uses netem,
# or where the kernel has none, a user-space switch that holds every frame (tests' delay-switch,
# joined to the namespaces by TAP devices), or failing that the soft-RoCE guest of
# scripts/softroce-vm.sh (Debian's kernel has netem), unless --no-vm. Every process has a hard
# timeout; namespaces are removed on exit, failure or interruption.
set -uo pipefail
cd "$(dirname "$0")/.."

NODES=3 QUICK=0 VM=1 DELAY_ONLY=0
[ -n "${DSM_NETNS_NO_VM:-}" ] && VM=0
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) NODES=$2; shift 2;;
    --quick) QUICK=1; shift;;
    --no-vm) VM=0; shift;;
    --delay-only) DELAY_ONLY=1; shift;;
    *) sed -n '2,22p' "$0" >&2; exit 2;;
  esac
done
say() { echo "netns-test: $*"; }
skip() { say "SKIP: $*"; exit 77; }
PARTLY=0
skip_part() { say "SKIP: $*"; PARTLY=1; }
fail() { say "FAILED: $*"; exit 1; }

BIN=${DSM_NETNS_BIN:-target/release}
P=dsmt$$          # prefix of everything this run creates
OUT=$(mktemp -d -t dsm-netns.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-"); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || skip "not root: creating network namespaces needs root (CI runs as root)"
command -v ip >/dev/null && command -v tc >/dev/null || skip "ip/tc missing (Debian package iproute2)"
ip netns add "$P-probe" 2>"$OUT/probe.err" ||
  skip "cannot create a network namespace here: $(cat "$OUT/probe.err")"
NETEM=1
ip -n "$P-probe" link set lo up
tc -n "$P-probe" qdisc add dev lo root netem delay 1ms 2>/dev/null || NETEM=0
NFT=0
if [ $NETEM = 0 ]; then
  command -v nft >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables \
      >"$OUT/apt.log" 2>&1 || say "cannot install nftables (see above); no loss stage"; }
  ip netns exec "$P-probe" nft add table inet probe 2>/dev/null && NFT=1
fi
ip netns del "$P-probe"

# The programs, built once (incremental).
if [ -z "${DSM_NETNS_BIN:-}" ]; then
  cargo build --locked --release -p tests -p benches --bins >"$OUT/build.log" 2>&1 ||
    { cat "$OUT/build.log"; fail "cargo build"; }
fi
for b in dsm-check dsm-litmus dsm_bench stencil_bench delay-switch; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing"
done

# The network: a bridge in $P-sw, node R in $P-nR with eth0 = 10.199.0.(R+1).
ip netns add "$P-sw" || fail "ip netns add"
ip -n "$P-sw" link add br0 type bridge && ip -n "$P-sw" link set br0 up || fail "bridge"
for ((r = 0; r < NODES; r++)); do
  ns=$P-n$r
  ip netns add "$ns" || fail "ip netns add $ns"
  ip -n "$P-sw" link add "v$r" type veth peer name eth0 netns "$ns" || fail "veth for node $r"
  ip -n "$P-sw" link set "v$r" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.199.0.$((r + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
done
say "$NODES namespaces $P-n0..$((NODES - 1)) on bridge $P-sw, addresses 10.199.0.1-$NODES (netem: $([ $NETEM = 1 ] && echo yes || echo no))"

NSP=$P-n   # the namespaces the jobs run in: $NSP$R

# A second network for delay without netem: node R in $P-dD-nR, its eth0 a TAP of the
# user-space delay switch (tests/src/bin/delay-switch.rs), which holds every frame D us.
switch_net() {
  local d=$1 names=() r
  for ((r = 0; r < NODES; r++)); do names+=("dsw$$d$r"); done
  mkfifo "$OUT/sw$d"
  "$BIN/delay-switch" "$d" "${names[@]}" >"$OUT/sw$d" 2>"$OUT/sw$d.err" &
  PIDS+=($!)
  disown $!   # killed by cleanup, without bash reporting it
  local line=""
  read -r -t 20 line <"$OUT/sw$d" || true
  [ "$line" = ready ] || { cat "$OUT/sw$d.err"; return 1; }
  for ((r = 0; r < NODES; r++)); do
    local ns=$P-d$d-n$r
    ip netns add "$ns" && ip link set "${names[r]}" netns "$ns" &&
      ip -n "$ns" link set "${names[r]}" name eth0 &&
      ip -n "$ns" addr add "10.199.0.$((r + 1))/24" dev eth0 &&
      ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up || return 1
  done
  NSP=$P-d$d-n
}

# Applies a condition to every node's link: "none", "delay 100us", "loss 1%", ...
condition() {
  for ((r = 0; r < NODES; r++)); do
    tc -n "$NSP$r" qdisc del dev eth0 root 2>/dev/null
    ip netns exec "$NSP$r" nft delete table inet dsmloss 2>/dev/null
    [ "$1" = none ] && continue
    if [ $NETEM = 1 ]; then
      # shellcheck disable=SC2086
      tc -n "$NSP$r" qdisc add dev eth0 root netem $1 limit 100000 || return 1
    else
      local pct=${1#loss }; pct=${pct%\%}
      ip netns exec "$NSP$r" nft -f - <<EOF || return 1
table inet dsmloss {
  chain out { type filter hook output priority 0; oifname "eth0" numgen random mod 100 < $pct drop; }
}
EOF
    fi
  done
}

PORT=7000
# Runs PROGRAM ARGS on every node, started by hand; NAME labels the outputs. Fails the test
# unless every node exits 0 within LIMIT seconds.
job() {
  local name=$1 limit=$2; shift 2
  local secret; secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  PORT=$((PORT + 1))
  local pids=() r transport=${JOB_TRANSPORT:-tcp}
  for ((r = NODES - 1; r >= 0; r--)); do
    # Under auto, the first half of the nodes claim one host name and the rest another: the
    # job mixes shm (within a half) and tcp (across).
    local wrap=()
    [ "$transport" = auto ] &&
      wrap=(unshare --uts sh -c 'hostname "$0" && exec "$@"' "dsm-host-$((r * 2 / NODES))")
    ip netns exec "$NSP$r" env DSM_RANK=$r DSM_NODES=$NODES DSM_COORDINATOR=10.199.0.1:$PORT \
      DSM_SECRET="$secret" DSM_BIND=eth0 DSM_TRANSPORT="$transport" DSM_GLOBAL_SIZE=256M \
      DSM_CONNECT_TIMEOUT=60 DSM_PEER_TIMEOUT=30 \
      timeout -k 5 "$limit" "${wrap[@]}" "$@" >"$OUT/$name.$r" 2>&1 &
    pids[r]=$!; PIDS+=($!)
  done
  local bad=0
  for ((r = 0; r < NODES; r++)); do
    wait "${pids[r]}"; local st=$?
    if [ $st -ne 0 ]; then
      bad=1
      say "  $name: rank $r exited with $st$([ $st = 124 ] && echo " (timeout ${limit}s)"):"
      sed 's/^/    | /' "$OUT/$name.$r" | tail -15
    fi
  done
  [ $bad = 0 ] || return 1
  say "  $name: ok on $NODES nodes"
}

SUMMARY=()
stage() {
  local cond=$1 tag=$2 limit=$3
  say "condition: $cond"
  case $cond in
    *switch*) ;;   # the delay is the switch's
    *) condition "$cond" || fail "cannot apply '$cond'";;
  esac
  job "$tag-mesh" "$limit" "$BIN/dsm-check" mesh || fail "mesh under '$cond'"
  local scenarios="mp-lock counter-lock false-sharing atomics store-buffering mp-barrier"
  [ $QUICK = 1 ] && scenarios="mp-lock counter-lock"
  for s in $scenarios; do
    job "$tag-$s" "$limit" "$BIN/dsm-litmus" "$s" || fail "litmus $s under '$cond'"
    grep -q "rank 0: $s ok" "$OUT/$tag-$s.0" || fail "litmus $s under '$cond' did not report ok"
  done
  job "$tag-stencil" "$limit" "$BIN/stencil_bench" 512 10 || fail "stencil under '$cond'"
  grep -q "every cell matches" "$OUT/$tag-stencil.0" || fail "stencil under '$cond' gave a wrong grid"
  job "$tag-bench" "$limit" "$BIN/dsm_bench" --quick || fail "dsm_bench under '$cond'"
  local fault floor sweep
  fault=$(awk '/^remote 4 KiB read fault/ {print $7}' "$OUT/$tag-bench.0")
  floor=$(awk '/^remote 4 KiB read fault/ {print $8}' "$OUT/$tag-bench.0")
  sweep=$(sed -n 's/.*(\([0-9.]*\) ms per sweep).*/\1/p' "$OUT/$tag-stencil.0")
  say "  $cond: remote 4 KiB read fault median ${fault:-?} us (raw transport read ${floor:-?} us); stencil 512x512 ${sweep:-?} ms per sweep"
  SUMMARY+=("$(printf '%-20s %12s %12s %16s' "$cond" "${fault:-?}" "${floor:-?}" "${sweep:-?}")")
  echo "RESULT {\"bench\":\"netns\",\"condition\":\"$cond\",\"nodes\":$NODES,\"fault_median_us\":${fault:-null},\"floor_read_us\":${floor:-null},\"stencil_ms_per_sweep\":${sweep:-null}}"
}

# Two hosts in one job: shm within each, tcp across.
mixed_stage() {
  say "condition: two hosts (host names dsm-host-0, dsm-host-1), DSM_TRANSPORT=auto"
  JOB_TRANSPORT=auto job mixed-mesh 120 env DSM_STATS=1 "$BIN/dsm-check" mesh ||
    fail "mesh on two hosts"
  grep -q "transport per peer: .*shm" "$OUT/mixed-mesh.0" &&
    grep -q "transport per peer: .*tcp" "$OUT/mixed-mesh.0" ||
    fail "rank 0 did not use both shm and tcp: $(grep 'per peer' "$OUT/mixed-mesh.0")"
  say "  $(grep 'per peer' "$OUT/mixed-mesh.0")"
  local scenarios="mp-lock counter-lock false-sharing atomics store-buffering mp-barrier"
  [ $QUICK = 1 ] && scenarios="mp-lock counter-lock"
  for s in $scenarios; do
    JOB_TRANSPORT=auto job "mixed-$s" 120 "$BIN/dsm-litmus" "$s" || fail "litmus $s on two hosts"
    grep -q "rank 0: $s ok" "$OUT/mixed-$s.0" || fail "litmus $s on two hosts did not report ok"
  done
}

[ $DELAY_ONLY = 1 ] || stage none base 120
if [ $DELAY_ONLY = 0 ] && [ "$NODES" -ge 3 ]; then
  if unshare --uts true 2>/dev/null; then mixed_stage; else skip_part "the two-host stage: unshare --uts fails here"; fi
fi
if [ $NETEM = 1 ]; then
  stage "delay 100us" d100 180
  stage "delay 1ms" d1ms 300
  [ $DELAY_ONLY = 1 ] || stage "loss 1%" loss 300
elif [ $DELAY_ONLY = 1 ]; then
  fail "--delay-only needs netem, and this kernel has none"
else
  if [ $NFT = 1 ]; then
    stage "loss 1%" loss 300
  else
    skip_part "the loss stage: this kernel has no netem and nftables cannot filter here"
  fi
  if [ -c /dev/net/tun ] && switch_net 0; then
    say "this kernel has no netem: delay comes from a user-space switch (tests/src/bin/delay-switch.rs; it adds its own forwarding time, measured at 0)"
    stage "switch, no delay" sw0 180
    switch_net 100 || fail "the delay switch"
    stage "switch, delay 100us" sw100 240
    switch_net 1000 || fail "the delay switch"
    stage "switch, delay 1ms" sw1ms 300
  elif [ $VM = 1 ] && why=$(bash scripts/softroce-vm.sh --prepare 2>&1); then
    say "this kernel has no netem: the delay stages run inside the QEMU guest (Debian's kernel; emulated and slow, so its times say little)"
    # The guest runs Debian 12's kernel (6.1), where the uffd fault engine's UFFDIO_CONTINUE
    # fails with EINVAL; this stage tests the network, so it takes the sigsegv engine there.
    DSM_FAULT_ENGINE=${DSM_FAULT_ENGINE:-sigsegv} DSM_NETNS_BIN=$BIN \
      bash scripts/softroce-vm.sh --timeout 2400 --smp 2 --mem 3G -- \
      bash scripts/netns-test.sh --nodes "$NODES" --quick --no-vm --delay-only ||
      fail "the delay stages inside the guest"
  else
    skip_part "the delay stages: this kernel has no netem (CONFIG_NET_SCH_NETEM), no TUN device for the user-space switch$([ $VM = 0 ] && echo ", and --no-vm/DSM_NETNS_NO_VM is set")${why:+, and the QEMU guest cannot be prepared: $why}"
  fi
fi
echo
say "condition            fault med(us)  read(us) stencil ms/sweep"
for l in "${SUMMARY[@]}"; do say "$l"; done
if [ $PARTLY = 1 ]; then say "passed what could run (see the SKIP lines)"; exit 78; fi
say "all passed"
