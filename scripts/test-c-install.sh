#!/usr/bin/env bash
# The C user's path, end to end: first straight from the target directory (`cargo build`, then
# cc -L target/release -ldsm -Wl,-rpath,target/release, and the same for libdsmmpi), then
# installed into a fresh prefix: the examples compiled with the flags pkg-config gives (shared
# and static), run on 4 local nodes with the installed dsmrun.
#   scripts/test-c-install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=$(mktemp -d /tmp/dsm-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
fail() { echo "test-c-install: FAILED: $*" >&2; exit 1; }

# 1. From the target directory, as the docs' compile lines do: the build leaves the SONAME
#    links libdsm.so.0 and libdsmmpi.so.0 there.
cargo build --locked --release -p dsm-ffi -p dsmmpi --lib
cargo build --locked --release -p dsm-launcher --bin dsmrun
R=$PWD/target/release
for lib in dsm dsmmpi; do
  soname=$(readelf -d "$R/lib$lib.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
  [ "$soname" = "lib$lib.so.0" ] || fail "lib$lib.so has SONAME '$soname', not lib$lib.so.0"
  [ -e "$R/lib$lib.so.0" ] || fail "cargo build left no $R/lib$lib.so.0"
done
cc -std=c11 -Wall -Werror -O2 -Iffi/include ffi/examples/hello.c -o "$prefix/hello-target" \
  -L"$R" -ldsm -Wl,-rpath,"$R" || fail "hello.c does not link against $R"
out=$("$R/dsmrun" -n 2 --timeout 120 "$prefix/hello-target" 2>&1) || {
  echo "$out" >&2; fail "hello linked against $R does not run"; }
[ "$(grep -c 'add up to 1$' <<<"$out")" = 2 ] || fail "hello linked against $R: $out"
printf '#include <mpi.h>\n#include <stdio.h>\nint main(int c, char **v) { int r, n; MPI_Init(&c, &v);
  MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Comm_size(MPI_COMM_WORLD, &n);
  int s = 0; MPI_Allreduce(&r, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("rank %%d of %%d: sum %%d\\n", r, n, s); MPI_Finalize(); return 0; }\n' > "$prefix/mpi-target.c"
cc -std=c11 -Wall -Werror -O2 -Impi-compat/capi/include "$prefix/mpi-target.c" -o "$prefix/mpi-target" \
  -L"$R" -ldsmmpi -Wl,-rpath,"$R" || fail "an MPI program does not link against $R/libdsmmpi.so"
out=$("$R/dsmrun" -n 2 --timeout 120 "$prefix/mpi-target" 2>&1) || {
  echo "$out" >&2; fail "an MPI program linked against $R does not run"; }
[ "$(grep -c 'of 2: sum 1' <<<"$out")" = 2 ] || fail "MPI program linked against $R: $out"
echo "test-c-install: C and C MPI programs linked against $R run (SONAME links present)"

# 2. Installed.
bash scripts/install.sh --prefix "$prefix" | sed 's/^/  /'
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
soname=$(readelf -d "$prefix/lib/libdsm.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libdsm.so.0" ] || fail "libdsm.so has SONAME '$soname', not libdsm.so.0"

repo=$PWD
cd "$prefix"
for ex in hello counter stencil; do
  # shellcheck disable=SC2046 # pkg-config's output is a list of words
  cc -std=c11 -Wall -Wextra -Werror -O2 "share/doc/dsm/examples/$ex.c" -o "$ex" \
    $(pkg-config --cflags --libs dsm) -lm || fail "$ex does not compile with pkg-config dsm"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Wextra -Werror -O2 "share/doc/dsm/examples/$ex.c" -o "$ex-static" \
    $(pkg-config --cflags --libs dsm-static) -lm || fail "$ex does not link with pkg-config dsm-static"
done
# The header is C++ too (extern "C", no C-only constructs).
# shellcheck disable=SC2046
printf '#include <dsm.h>\nint main() { dsm_lock_t l; (void)l; return dsm_initialized(); }\n' |
  c++ -std=c++17 -Wall -Wextra -Werror -x c++ - -o cxx-check $(pkg-config --cflags --libs dsm) ||
  fail "dsm.h does not compile as C++"
./cxx-check || fail "a C++ program linked with libdsm does not run"
# (ldd's output is captured first: `ldd | grep -q` under pipefail fails when grep exits early.)
needs=$(ldd hello)
[[ "$needs" == *"libdsm.so.0 => $prefix/lib/libdsm.so.0 "* ]] ||
  fail "hello does not load the installed libdsm.so.0: $needs"
needs=$(ldd hello-static)
[[ "$needs" != *libdsm* ]] || fail "hello-static still needs libdsm.so: $needs"

run() {
  local out
  out=$("$prefix/bin/dsmrun" -n 4 --timeout 120 "$@" 2>&1) || { echo "$out" >&2; fail "$* failed"; }
  echo "$out"
}
for variant in "" -static; do
  [ "$(run "./hello$variant" | grep -c 'add up to 14')" = 4 ] || fail "hello$variant"
  [ "$(run "./counter$variant" 300 | grep -c 'counter 1200, atomic 1200, expected 1200: ok')" = 4 ] \
    || fail "counter$variant"
  [ "$(run "./stencil$variant" 256 20 | grep -c 'max difference from serial 0: ok')" = 4 ] \
    || fail "stencil$variant"
done
# A PARMACS program, as a SPLASH user builds it: m4 with the installed macros, then cc with
# pkg-config, then a plain dsmrun (no option, no variable).
m4 -Ulen -Uindex "$(pkg-config --variable=parmacs dsm)" "$repo/ffi/tests/parmacs/check.c.in" \
  > parmacs-check.c || fail "m4 with the installed parmacs.m4"
# shellcheck disable=SC2046
cc -std=c11 -O2 parmacs-check.c -o parmacs-check $(pkg-config --cflags --libs dsm) ||
  fail "a PARMACS program does not compile with pkg-config dsm"
for p in 4 6; do
  [ "$(run ./parmacs-check -p$p | grep -c "parmacs check ok P=$p")" = 1 ] || fail "parmacs-check -p$p"
done
run ./counter 2000 | grep 'rank 0'
run ./stencil 512 50 | grep 'rank 0'
echo "test-c-install: installed library, header and pkg-config files work (shared and static)"
