#!/usr/bin/env bash
# The C user's path, end to end: install into a fresh prefix, compile the examples with the flags
# pkg-config gives (shared and static), run them on 4 local nodes with the installed dsmrun.
#   scripts/test-c-install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=$(mktemp -d /tmp/dsm-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
bash scripts/install.sh --prefix "$prefix" | sed 's/^/  /'
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"

fail() { echo "test-c-install: FAILED: $*" >&2; exit 1; }
soname=$(readelf -d "$prefix/lib/libdsm.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libdsm.so.0" ] || fail "libdsm.so has SONAME '$soname', not libdsm.so.0"

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
run ./counter 2000 | grep 'rank 0'
run ./stencil 512 50 | grep 'rank 0'
echo "test-c-install: installed library, header and pkg-config files work (shared and static)"
