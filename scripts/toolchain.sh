# Sourced by the scripts that build (scripts/setup.sh, test.sh, run.sh, test-softroce.sh): finds
# the Rust toolchain when $HOME is not the home rustup installed it under (a CI job, or a run
# with HOME=$(mktemp -d)). rustup's proxies on PATH (H/.cargo/bin/cargo) then know no toolchain,
# as they look in $HOME/.rustup: point RUSTUP_HOME at the installation the proxy
# on PATH belongs to. Changes nothing when cargo already works or RUSTUP_HOME is set.
if [ -z "${RUSTUP_HOME:-}" ] && ! cargo --version >/dev/null 2>&1; then
  _proxy=$(command -v cargo 2>/dev/null || true)
  _home=$(dirname "$(dirname "$(dirname "${_proxy:-/x/x/x/x}")")")
  if [ -n "$_proxy" ] && [ -d "$_home/.rustup" ]; then
    export RUSTUP_HOME=$_home/.rustup
    echo "toolchain: no Rust toolchain under HOME=$HOME; using the one on PATH (RUSTUP_HOME=$RUSTUP_HOME)"
  fi
  unset _proxy _home
fi
