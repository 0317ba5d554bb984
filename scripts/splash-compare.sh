#!/usr/bin/env bash
# SPLASH-3's FFT, LU (contiguous blocks) and RADIX, unmodified, built twice from the same
# sources: with the suite's own pthread macros, and with this project's PARMACS macros against
# libdsm. Runs them interleaved, checks every run's own -t test, and prints each program's own
# time (without initialisation) as best and median, with the ratio to the pthread build on one
# thread measured in the same run.
#
#   SPLASH_SRC=/path/to/Splash-3 scripts/splash-compare.sh [--runs N] [--nodes "1 2 4"] [--small]
#
# SPLASH_SRC is a checkout of the public repository SakalisC/Splash-3 (not part of this
# project; nothing of it is committed here). Output: a table, and `RESULT {json}` lines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

RUNS=5 NODES="1 2 4" SMALL=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2;;
    --nodes) NODES=$2; shift 2;;
    --small) SMALL=1; shift;;
    *) echo "splash-compare: unknown option $1" >&2; exit 2;;
  esac
done
SRC=${SPLASH_SRC:?set SPLASH_SRC to a checkout of SakalisC/Splash-3}
[ -d "$SRC/codes/kernels/fft" ] || { echo "splash-compare: $SRC is not a Splash-3 checkout" >&2; exit 2; }
command -v m4 >/dev/null || { echo "splash-compare: m4 is missing (scripts/setup.sh)" >&2; exit 2; }

cargo build --locked --release -p dsm-ffi --lib >&2
cargo build --locked --release --bin dsmrun >&2
R=$PWD/target/release
DSMRUN=$R/dsmrun
W=$(mktemp -d /tmp/splash-compare.XXXXXX)
trap 'rm -rf "$W"' EXIT
CFLAGS=(-O2 -D_XOPEN_SOURCE=500 -D_POSIX_C_SOURCE=200112 -std=c11 -fno-strict-aliasing -w)

# name source-dir file args(small) args(default)
PROGRAMS=(
  "fft|kernels/fft|fft|-m16|-m20"
  "lu|kernels/lu/contiguous_blocks|lu|-n256|-n1024"
  "radix|kernels/radix|radix|-n262144|-n4194304"
)
# The suite's pthread macros time with time(0), in seconds; both builds time in microseconds
# (gettimeofday, as the suite's null macros and ours do).
cat > "$W/clock.m4" <<'M4'
divert(-1)
define(`CLOCK', `{ struct timeval tv_; gettimeofday(&tv_, NULL); ($1) = (unsigned long)(tv_.tv_usec + tv_.tv_sec * 1000000); }')
divert(0)
#include <sys/time.h>
M4
for spec in "${PROGRAMS[@]}"; do
  IFS='|' read -r name dir file _ _ <<<"$spec"
  mkdir -p "$W/$name"
  m4 -Ulen -Uindex "$SRC/codes/pthread_macros/pthread.m4.stougie" "$W/clock.m4" \
    "$SRC/codes/$dir/$file.c.in" \
    > "$W/$name/pthread.c"
  gcc "${CFLAGS[@]}" -pthread "$W/$name/pthread.c" -o "$W/$name/pthread" -lm
  m4 -Ulen -Uindex ffi/parmacs/dsm.m4 "$SRC/codes/$dir/$file.c.in" > "$W/$name/dsm.c"
  gcc "${CFLAGS[@]}" -Iffi/include "$W/$name/dsm.c" -o "$W/$name/dsm" -L"$R" -ldsm \
    -Wl,-rpath,"$R" -lm
done

# run NAME VARIANT N ARGS...: one run; prints the program's time (microseconds, without
# initialisation), or fails when its -t check does not pass.
one() {
  local name=$1 variant=$2 n=$3; shift 3
  local out
  if [ "$variant" = pthread ]; then
    out=$(timeout 600 "$W/$name/pthread" "$@" -p"$n" -t 2>&1) || { echo "$out" >&2; return 1; }
  else
    out=$(timeout 600 "$DSMRUN" -n "$n" --timeout 590 "$W/$name/dsm" "$@" -p"$n" -t 2>&1) ||
      { echo "$out" >&2; return 1; }
  fi
  grep -qiE 'PASSED|passed' <<<"$out" || { echo "$out" >&2; echo "no PASSED" >&2; return 1; }
  grep -iE 'Total time without initialization' <<<"$out" | head -1 | grep -oE '[0-9]+$'
}
stats() {  # best and median of the numbers on stdin
  sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; print a[1], m}'
}

printf '%-6s %-16s %10s %10s %12s\n' program config best_us median_us "median/pt-1"
for spec in "${PROGRAMS[@]}"; do
  IFS='|' read -r name _ _ small big <<<"$spec"
  args=$big; [ "$SMALL" = 1 ] && args=$small
  configs=("pthread 1" "pthread 2")
  for n in $NODES; do configs+=("dsm $n"); done
  declare -A times=()
  for ((i = 0; i < RUNS; i++)); do
    for c in "${configs[@]}"; do
      read -r variant n <<<"$c"
      # shellcheck disable=SC2086 # the arguments are words
      t=$(one "$name" "$variant" "$n" $args) || { echo "splash-compare: $name $c failed" >&2; exit 1; }
      times[$c]="${times[$c]:-} $t"
    done
  done
  base=$(tr ' ' '\n' <<<"${times[pthread 1]}" | grep . | stats | cut -d' ' -f2)
  for c in "${configs[@]}"; do
    read -r best median < <(tr ' ' '\n' <<<"${times[$c]}" | grep . | stats)
    ratio=$(awk -v m="$median" -v b="$base" 'BEGIN {printf "%.2f", m / b}')
    printf '%-6s %-16s %10s %10s %12s\n' "$name" "$c" "$best" "$median" "$ratio"
    echo "RESULT {\"program\":\"$name\",\"args\":\"$args\",\"config\":\"$c\",\"runs\":$RUNS,\"best_us\":$best,\"median_us\":$median,\"ratio_to_pthread_1\":$ratio}"
  done
  unset times
done
