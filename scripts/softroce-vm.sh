#!/usr/bin/env bash
# Runs a host command inside a throw-away QEMU guest whose kernel has soft-RoCE (rdma_rxe) with a
# device rxe0 on the guest's loopback, and returns the command's exit status. One boot per call:
# pass a script to run several programs in the same guest.
#
#   scripts/softroce-vm.sh [--timeout SECS] [--mem SIZE] [--smp N] -- PROGRAM [ARGS...]
#   scripts/softroce-vm.sh --check      is the guest ready to boot? (changes nothing)
#   scripts/softroce-vm.sh --prepare    make it ready: install, download, build (idempotent)
#
#   --check    says what is missing (exit 1) or that the guest is ready (exit 0); installs,
#              downloads and writes nothing
#   --prepare  installs the host packages that are missing (apt-get, with sudo -n when not
#              root), downloads the guest kernel, builds the initramfs; exit 0 when ready, 125
#              with the reason when it cannot be
# Running a command prepares first, as --prepare does.
#
# How: the guest kernel is Debian's own kernel package (it ships rdma_rxe.ko), fetched with
# `apt-get download` and unpacked (never installed) under $DSM_SOFTROCE_CACHE (default
# ~/.cache/dsm-softroce, created when missing); a small busybox initramfs loads the modules,
# mounts the host's root filesystem read-only over 9p with a tmpfs overlay, creates rxe0 (port 1;
# GID index 1 is the RoCE v2 GID ::ffff:127.0.0.1), and runs the command in a chroot with the
# same working directory and environment. Host-built binaries run unchanged; build on the host,
# never in the guest (it is emulated: QEMU TCG, since these hosts offer no usable KVM).
# A guest that shows no sign of life within DSM_SOFTROCE_LIFE_TIMEOUT seconds (default 150: a
# boot takes 10-40 s) is stopped and booted once more, saying so. DSM_SOFTROCE_STALL_BOOTS=N
# makes the first N boots stall on purpose (to test that watchdog).
# Exit status: the command's; 124 on timeout; 125 when the guest could not be prepared or died.
set -uo pipefail

CACHE=${DSM_SOFTROCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dsm-softroce}
LIFE_TIMEOUT=${DSM_SOFTROCE_LIFE_TIMEOUT:-150}
STALL_BOOTS=${DSM_SOFTROCE_STALL_BOOTS:-0}
TIMEOUT=1200 MEM=3G SMP=2 MODE=run
while [ $# -gt 0 ]; do
  case $1 in
    --timeout) TIMEOUT=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    --smp) SMP=$2; shift 2;;
    --check) MODE=check; shift;;
    --prepare) MODE=prepare; shift;;
    --) shift; break;;
    -*) echo "softroce-vm: unknown option $1" >&2; exit 2;;
    *) break;;
  esac
done
[ $MODE != run ] || [ $# -gt 0 ] || { sed -n '2,28p' "$0" >&2; exit 2; }
say() { echo "softroce-vm: $*" >&2; }

PACKAGES=(qemu-system-x86 busybox-static cpio kmod xz-utils iproute2 ibverbs-providers perftest)
TOOLS=(qemu-system-x86_64 busybox cpio modprobe depmod xz)
# Bump when /init or the module list below changes: the cached initramfs is rebuilt.
INIT_VERSION=4
missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
missing_tools() { local c; for c in "${TOOLS[@]}"; do command -v "$c" >/dev/null || echo "$c"; done; }
cached_kver() { ls "$CACHE/kroot/lib/modules" 2>/dev/null | head -1; }

# --check: read-only. Says everything that is missing, not only the first thing.
if [ $MODE = check ]; then
  why=()
  m=$(missing_packages | paste -sd' ' -); [ -z "$m" ] || why+=("packages not installed: $m")
  m=$(missing_tools | paste -sd' ' -); [ -z "$m" ] || why+=("not on PATH: $m")
  KVER=${DSM_SOFTROCE_KVER:-$(cached_kver)}
  if [ -z "$KVER" ] || [ ! -f "$CACHE/kroot/boot/vmlinuz-$KVER" ]; then
    why+=("the guest kernel is not downloaded yet (into $CACHE)")
  elif [ ! -s "$CACHE/initramfs-$KVER-v$INIT_VERSION.cpio.gz" ]; then
    why+=("the initramfs for kernel $KVER is not built yet")
  fi
  if [ ${#why[@]} -gt 0 ]; then
    for w in "${why[@]}"; do say "$w"; done
    say "not ready: scripts/softroce-vm.sh --prepare installs, downloads and builds what is missing"
    exit 1
  fi
  say "ready: kernel $KVER, cache $CACHE"
  exit 0
fi

mkdir -p "$CACHE" || { say "cannot create $CACHE"; exit 125; }

# 1. Host packages (installed when missing; says what it does).
missing=($(missing_packages))
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  say "installing ${missing[*]} (log: $CACHE/apt.log)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
           --no-install-recommends "${missing[@]}"; } >"$CACHE/apt.log" 2>&1; then
    tail -5 "$CACHE/apt.log" | sed 's/^/softroce-vm:   apt: /' >&2
    say "cannot install ${missing[*]} (see $CACHE/apt.log)"; exit 125
  fi
fi
m=$(missing_tools | paste -sd' ' -)
[ -z "$m" ] || { say "not on PATH: $m (PATH=$PATH)"; exit 125; }

# 2. The guest kernel: Debian's current amd64 kernel package, unpacked once.
KVER=${DSM_SOFTROCE_KVER:-$(cached_kver)}
if [ -z "$KVER" ] || [ ! -f "$CACHE/kroot/boot/vmlinuz-$KVER" ]; then
  KVER=${DSM_SOFTROCE_KVER:-$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/.*Depends: linux-image-\(.*-amd64\)$/\1/p' | head -1)}
  [ -n "$KVER" ] || { say "cannot resolve the Debian kernel version (apt-cache depends linux-image-amd64)"; exit 125; }
  say "downloading the guest kernel linux-image-$KVER (once; cached in $CACHE)"
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && { apt-get download "linux-image-$KVER-unsigned" || apt-get download "linux-image-$KVER"; } >/dev/null 2>&1); then
    rm -rf "$tmp"; say "apt-get download of the kernel $KVER failed"; exit 125
  fi
  rm -rf "$CACHE/kroot"; mkdir -p "$CACHE/kroot"
  dpkg-deb -x "$tmp"/linux-image-*.deb "$CACHE/kroot" || { rm -rf "$tmp"; say "unpacking the kernel failed"; exit 125; }
  rm -rf "$tmp"
fi
ls "$CACHE/kroot/lib/modules/$KVER/kernel/drivers/infiniband/sw/rxe/"rdma_rxe.ko* >/dev/null 2>&1 ||
  { say "kernel $KVER has no rdma_rxe module"; exit 125; }

# The uncompressed vmlinux boots through QEMU's PVH entry (skips firmware and decompression:
# several seconds under emulation); the bzImage is the fallback.
KIMG=$CACHE/vmlinux-$KVER
if [ ! -s "$KIMG" ]; then
  bz=$CACHE/kroot/boot/vmlinuz-$KVER
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
  if [ -n "$off" ] && tail -c +$((off + 1)) "$bz" | xz -dc --single-stream > "$KIMG.tmp" 2>/dev/null &&
     head -c 4 "$KIMG.tmp" | grep -q ELF; then
    mv "$KIMG.tmp" "$KIMG"
  else
    rm -f "$KIMG.tmp"; KIMG=$bz
  fi
fi

# 3. The initramfs: busybox, the modules in dependency order (veth, bridge and sch_netem for
#    scripts/netns-test.sh's delay stages), and /init (below).
INITRD=$CACHE/initramfs-$KVER-v$INIT_VERSION.cpio.gz
if [ ! -s "$INITRD" ]; then
  say "building the initramfs"
  MODDIR=$CACHE/kroot/lib/modules/$KVER
  [ -f "$MODDIR/modules.dep" ] || depmod -b "$CACHE/kroot" "$KVER"
  W=$(mktemp -d)
  mkdir -p "$W"/{bin,proc,sys,dev,host,newroot,rw,out,mods}
  cp "$(command -v busybox)" "$W/bin/busybox"
  ln -s busybox "$W/bin/sh"
  : > "$W/mods/order"
  for m in virtio_pci 9pnet_virtio 9p overlay crc32_generic udp_tunnel ip6_udp_tunnel \
           ib_core ib_uverbs rdma_rxe veth bridge sch_netem; do
    modprobe -d "$CACHE/kroot" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    b=$(basename "$ko")
    case "$ko" in *.ko.xz) xz -dc "$ko" > "$W/mods/${b%.xz}"; b=${b%.xz};;
                  *) cp "$ko" "$W/mods/$b";; esac
    echo "$b" >> "$W/mods/order"
  done
  cat > "$W/init" <<'INIT'
#!/bin/sh
# /init of the soft-RoCE guest (busybox): modules, host root over 9p + tmpfs overlay, rxe0 on
# lo, then /run/dsm-out/cmd.sh in a chroot; its status goes to /run/dsm-out/rc; power off.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
log() { echo "[softroce-vm $(cut -d' ' -f1 /proc/uptime)s] $*"; }
for ko in $(cat /mods/order); do insmod /mods/$ko || log "insmod $ko failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || { log "FATAL: 9p"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none dsmout /out || { log "FATAL: 9p out"; poweroff -f; }
# dsm.stall on the command line (DSM_SOFTROCE_STALL_BOOTS, for testing the host's watchdog):
# a guest that never shows a sign of life.
grep -q 'dsm.stall' /proc/cmdline && { log "stalling (dsm.stall)"; while :; do sleep 3600; done; }
echo "$(cut -d' ' -f1 /proc/uptime)" > /out/alive   # the host's watchdog: this guest lives
mount -t tmpfs -o size=75% rw /rw; mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  { mount --bind /host /newroot; mount -t tmpfs tmp /newroot/tmp; }
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t tmpfs run $R/run; mkdir -p $R/run/dsm-out; mount --move /out $R/run/dsm-out
ip link set lo up
chroot $R rdma link add rxe0 type rxe netdev lo || log "rdma link add rxe0 failed"
log "guest ready (rxe0 on lo)"
chroot $R /bin/bash /run/dsm-out/cmd.sh
echo $? > $R/run/dsm-out/rc
sync; umount $R/run/dsm-out 2>/dev/null
poweroff -f
INIT
  chmod +x "$W/init"
  (cd "$W" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp" && mv "$INITRD.tmp" "$INITRD"
  rm -rf "$W"
  [ -s "$INITRD" ] || { say "initramfs build failed"; exit 125; }
fi
if [ $MODE = prepare ]; then
  say "ready: kernel $KVER, cache $CACHE"
  exit 0
fi

# 4. One boot: the command, with this environment and working directory.
RUN=$(mktemp -d -t dsm-softroce.XXXXXX)
QEMU=""
{
  echo '#!/bin/bash'
  for n in $(compgen -e); do
    case $n in PWD|OLDPWD|SHLVL|_|HOSTNAME|TERM|BASH_*|TMPDIR) continue;; esac
    printf 'export %s=%q\n' "$n" "${!n}"
  done
  echo 'ulimit -l unlimited 2>/dev/null'
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$RUN/cmd.sh"

# One boot in the background, watched: a guest that has not written $RUN/alive (from /init,
# once its 9p share is mounted) within LIFE_TIMEOUT seconds is stopped, and booted once more.
# no_timer_check: under a heavily loaded host the emulated guest can fail the kernel's IO-APIC
# timer check at boot and panic ("IO-APIC + timer doesn't work"); the timer works, skip the check.
boot() { # attempt
  local stall=""; [ "$1" -le "$STALL_BOOTS" ] && stall=" dsm.stall"
  timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM" \
    -nodefaults -no-user-config -display none -no-reboot \
    -chardev stdio,id=con,signal=off -serial chardev:con \
    -kernel "$KIMG" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off no_timer_check$stall" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$RUN,mount_tag=dsmout,security_model=none" \
    </dev/null &
  QEMU=$!
}
# The EXIT trap stops a guest still running (QEMU is emptied once it has been reaped, so that a
# recycled process id is never signalled).
trap '[ -n "$QEMU" ] && kill -TERM $QEMU 2>/dev/null; rm -rf "$RUN"' EXIT
trap 'say "interrupted"; exit 130' INT TERM
for attempt in 1 2; do
  rm -f "$RUN/alive" "$RUN/rc"
  t0=$SECONDS
  boot $attempt
  while [ ! -e "$RUN/alive" ] && kill -0 $QEMU 2>/dev/null && [ $((SECONDS - t0)) -lt "$LIFE_TIMEOUT" ]; do
    sleep 1   # a watchdog's poll, not a synchronisation: the guest's work never waits on it
  done
  if [ -e "$RUN/alive" ] || ! kill -0 $QEMU 2>/dev/null; then
    break
  fi
  kill -TERM $QEMU 2>/dev/null; wait $QEMU 2>/dev/null; QEMU=""
  if [ $attempt = 1 ]; then
    say "the guest showed no sign of life within ${LIFE_TIMEOUT}s: stopped it, booting once more"
  else
    say "the guest showed no sign of life within ${LIFE_TIMEOUT}s, twice: giving up"
    exit 125
  fi
done
wait $QEMU
qrc=$?
QEMU=""
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then say "timed out after ${TIMEOUT}s"; exit 124; fi
[ -f "$RUN/rc" ] && exit "$(cat "$RUN/rc")"
say "the guest did not report an exit status (qemu status $qrc)"
exit 125
