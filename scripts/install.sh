#!/usr/bin/env bash
# Builds the runtime in release mode and installs what C programs and job launches need:
#   lib/libdsm.so (with its SONAME links), lib/libdsm.a, include/dsm.h,
#   lib/pkgconfig/dsm.pc and dsm-static.pc, bin/dsmrun, share/doc/dsm/examples/*.c,
#   share/dsm/parmacs.m4 (the PARMACS macros: pkg-config --variable=parmacs dsm); and the
#   MPI layer: lib/libdsmmpi.so (with its SONAME links), include/dsmmpi/mpi.h, lib/pkgconfig/dsmmpi.pc,
#   bin/dsmmpicc and bin/dsmmpicxx
#
#   scripts/install.sh --prefix DIR     (default: /usr/local)
# Then: export PKG_CONFIG_PATH=DIR/lib/pkgconfig; cc prog.c $(pkg-config --cflags --libs dsm)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

prefix=/usr/local
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }
              prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install: unknown argument '$1' (usage: scripts/install.sh --prefix DIR)" >&2; exit 2 ;;
  esac
done
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

echo "install: building libdsm and dsmrun (release)"
# --print native-static-libs names the system libraries a static link of libdsm.a needs. The
# build's progress is shown as it goes (a first build takes a minute or more).
notes=$(cargo rustc --locked --release -p dsm-ffi --lib -- --print native-static-libs 2>&1 |
        tee /dev/stderr)
static_libs=$(echo "$notes" | sed -n 's/.*native-static-libs: //p' | tail -1)
[ -n "$static_libs" ] || { echo "install: rustc did not name the static libraries" >&2; exit 1; }
cargo build --locked --release -p dsm-launcher --bin dsmrun
cargo build --locked --release -p dsmmpi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
echo "install: libdsm $version into $prefix"
install -d "$prefix/lib/pkgconfig" "$prefix/include/dsmmpi" "$prefix/bin" \
  "$prefix/share/doc/dsm/examples" "$prefix/share/dsm"
for lib in dsm dsmmpi; do   # the file, then its SONAME link (lib$lib.so.$major), then the dev link
  install -m 755 "target/release/lib$lib.so" "$prefix/lib/lib$lib.so.$version"
  ln -sf "lib$lib.so.$version" "$prefix/lib/lib$lib.so.$major"
  ln -sf "lib$lib.so.$major" "$prefix/lib/lib$lib.so"
done
install -m 644 target/release/libdsm.a "$prefix/lib/libdsm.a"
install -m 644 ffi/include/dsm.h "$prefix/include/dsm.h"
install -m 755 target/release/dsmrun "$prefix/bin/dsmrun"
install -m 644 ffi/examples/*.c "$prefix/share/doc/dsm/examples/"
install -m 644 ffi/parmacs/dsm.m4 "$prefix/share/dsm/parmacs.m4"
install -m 644 mpi-compat/capi/include/mpi.h "$prefix/include/dsmmpi/mpi.h"
install -m 755 mpi-compat/capi/dsmmpicc "$prefix/bin/dsmmpicc"
ln -sf dsmmpicc "$prefix/bin/dsmmpicxx"
for pc in ffi/dsm ffi/dsm-static mpi-compat/capi/dsmmpi; do
  sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@STATIC_LIBS@|$static_libs|" \
    "$pc.pc.in" > "$prefix/lib/pkgconfig/$(basename "$pc").pc"
done
echo "install: done; use: export PKG_CONFIG_PATH=$prefix/lib/pkgconfig"
echo "install:   cc prog.c \$(pkg-config --cflags --libs dsm) && $prefix/bin/dsmrun -n 4 ./a.out"
echo "install:   MPI: $prefix/bin/dsmmpicc prog.c (or pkg-config dsmmpi) && $prefix/bin/dsmrun -n 4 ./a.out"
