#!/usr/bin/env bash
# Installs what building and testing the runtime needs, when it is missing, and says what it
# does. Idempotent: a second run installs nothing.
#   scripts/setup.sh          system packages (Debian/Ubuntu, via apt-get) and Rust components
set -euo pipefail

PACKAGES=(build-essential pkg-config libclang-dev clang libibverbs-dev librdmacm-dev
          ibverbs-providers libhwloc-dev mpich iproute2 valgrind m4)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: missing packages ${missing[*]}, and no apt-get to install them" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present (${PACKAGES[*]})"
fi

source "$(dirname "$0")/toolchain.sh"
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: adding the Rust component $c"
    rustup component add "$c"
  fi
done
echo "setup: $(cargo --version)"
