# shellcheck shell=bash
# Shared by scripts/qemu-test.sh, scripts/qemu-run.sh, .ci/run and the namespace tests: where things are,
# how the kernel is built, how QEMU is found (or installed), and the QEMU machine.
# Source it; it defines functions and a few variables and runs nothing else.

# Repository root, whatever the caller's working directory.
NEXUS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Absolute form of a path given relative to the caller's working directory ($1),
# so env vars like UART_LOG=foo.log mean what the user typed even after we cd.
nexus_abspath() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$NEXUS_CALLER_PWD/$1" ;;
    esac
}
NEXUS_CALLER_PWD=$PWD

# The ELF cargo produces for the image (source/.cargo/config.toml sets the target).
nexus_default_kernel_elf() {
    local target_dir=${CARGO_TARGET_DIR:-target}
    case $target_dir in
        /*) ;;
        *) target_dir=$NEXUS_ROOT/source/$target_dir ;; # cargo runs inside source/
    esac
    printf '%s\n' "$target_dir/x86_64-unknown-linux-gnu/release/nexus-kernel"
}

# Build the bootable image. cargo must run inside source/ so that
# source/.cargo/config.toml (target, linker flags) is honoured.
nexus_build_kernel() {
    local tag=$1
    if [[ ! -f $NEXUS_ROOT/source/Cargo.toml ]]; then
        echo "$tag: source/Cargo.toml not found: the image workspace is missing" >&2
        return 2
    fi
    echo "$tag: building kernel: (cd source && cargo build --release -p nexus-kernel)"
    if ! (cd "$NEXUS_ROOT/source" && cargo build --release -p nexus-kernel); then
        echo "$tag: kernel build failed" >&2
        return 2
    fi
}

# Build the image unless SKIP_BUILD=1, then check that $KERNEL_ELF exists
# (the caller sets it). Returns 2, with the reason, when there is no image.
nexus_kernel_ready() {
    local tag=$1
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        nexus_build_kernel "$tag" || return 2
    fi
    if [[ ! -f $KERNEL_ELF ]]; then
        echo "$tag: kernel image not found: $KERNEL_ELF" >&2
        [[ ${SKIP_BUILD:-0} == 1 ]] && echo "$tag: (SKIP_BUILD=1 is set; build it or drop SKIP_BUILD)" >&2
        return 2
    fi
}

nexus_is_debian() { [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; }

# Install QEMU from Debian packages (root only). The one thing the scripts install.
nexus_apt_install_qemu() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends qemu-system-x86 ||
        { apt-get update && apt-get install -y --no-install-recommends qemu-system-x86; }
}

# Make sure the QEMU binary ($QEMU) can be run. When QEMU was not overridden, we are
# root and this is Debian, install qemu-system-x86 and say so; otherwise explain how
# to get it and return 2.
nexus_ensure_qemu() {
    local tag=$1 overridden=$2
    command -v "$QEMU" >/dev/null 2>&1 && return 0
    if [[ $overridden == 0 && $(id -u) == 0 ]] && nexus_is_debian; then
        echo "$tag: $QEMU not found; installing the Debian package qemu-system-x86 (running as root)"
        if nexus_apt_install_qemu && command -v "$QEMU" >/dev/null 2>&1; then
            return 0
        fi
        echo "$tag: installing qemu-system-x86 failed" >&2
    fi
    {
        echo "$tag: QEMU binary '$QEMU' not found."
        echo "$tag: install it with:  sudo apt-get install qemu-system-x86   (Debian/Ubuntu)"
        echo "$tag: or point QEMU=/path/to/qemu-system-x86_64 at an existing binary."
    } >&2
    return 2
}

# Escape a value for a QEMU option list (commas are doubled).
nexus_qemu_escape() { printf '%s\n' "${1//,/,,}"; }

# The machine every script boots (TCG only: never -enable-kvm / -accel kvm).
# Fills the array NEXUS_QEMU_ARGS; the caller adds the serial plumbing.
#   $1 kernel ELF, $2 kernel command line, $3 disk image (optional);
#   NETDEV_OPTS extends -netdev user,...
nexus_qemu_machine_args() { # <kernel> <kernel args> [disk image]
    nexus_qemu_machine_args_netdev "$1" "$2" "user,id=n0${NETDEV_OPTS:+,$NETDEV_OPTS}" "" "${3-}"
}

# The same machine on another network backend.
#   $1 kernel ELF, $2 kernel command line, $3 the whole -netdev value (its id must
#   be n0, e.g. "dgram,id=n0,..."), $4 the NIC's MAC (empty: QEMU's default),
#   $5 disk image (optional).
nexus_qemu_machine_args_netdev() {
    # shellcheck disable=SC2034,SC2054 # read by the caller; commas belong to QEMU options
    NEXUS_QEMU_ARGS=(
        -M microvm -cpu max -m 256M
        -nographic -no-reboot -display none -monitor none
        -netdev "$3"
        -device "virtio-net-device,netdev=n0${4:+,mac=$4}"
        -device isa-debug-exit,iobase=0xf4,iosize=4
        -kernel "$1"
        -append "$2"
    )
    # The disk sits on virtio-mmio transport 15 (page 0xfeb01000), apart from the
    # NIC on transport 23 (page 0xfeb02000): microvm packs eight 0x200-byte
    # transports per 4 KiB page, and the kernel maps device windows page by page,
    # so two devices held by two processes must not share a page.
    if [[ -n ${5-} ]]; then
        NEXUS_QEMU_ARGS+=(
            -drive "file=$(nexus_qemu_escape "$5"),format=raw,if=none,id=d0"
            -device virtio-blk-device,drive=d0,bus=virtio-mmio-bus.15
        )
    fi
}

# Size of a new disk image (raw, sparse).
NEXUS_DISK_SIZE=${NEXUS_DISK_SIZE:-4M}

# Make sure the raw disk image <path> exists (sparse, NEXUS_DISK_SIZE).
nexus_ensure_disk() {
    [[ -f $1 ]] && return 0
    mkdir -p "$(dirname "$1")"
    truncate -s "$NEXUS_DISK_SIZE" "$1"
}

# Delete every network namespace named "<prefix>-*" (test clean-up; never fails).
nexus_netns_del_prefix() {
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$1-" || true); do
        ip netns del "$n" 2>/dev/null || true
    done
}

# Print the last <lines> lines of every *.log in <dir> under a header, except
# the files named after it (test failure reports).
nexus_dump_logs() {
    local dir=$1 lines=$2 f skip
    shift 2
    for f in "$dir"/*.log; do
        [[ -f $f ]] || continue
        for skip in "$@"; do [[ $f == "$skip" ]] && continue 2; done
        echo "--- $(basename "$f") (last $lines lines) ---"
        tail -n "$lines" "$f" | sed 's/^/   /'
    done
}

# A probe killed by the kernel (source/apps/probes, every boot): the proof that
# containment works, not a failure. Matches the text after the timestamp.
# shellcheck disable=SC2034 # read by the scripts that source this file
NEXUS_PROBE_FAULT_RE='kernel: fault [a-z-]+ task=probe-[a-z]+ .*; process killed'

# End of a namespace test (netns-test.sh, scale-test.sh): stop every process in
# the caller's PID map (TERM, then KILL), dump each node's last <lines> log lines
# when FAILED is set, delete the "$PFX-*" namespaces and the work dir (unless
# KEEP=1). Uses the caller's PID, FAILED, TAG, WORK and PFX.
nexus_ns_test_cleanup() {
    local lines=$1 k
    for k in "${!PID[@]}"; do kill "${PID[$k]}" 2>/dev/null || true; done
    sleep 0.3
    for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
    if ((FAILED)); then
        echo "$TAG: --- last log lines of each node ---"
        nexus_dump_logs "$WORK" "$lines"
    fi
    nexus_netns_del_prefix "$PFX"
    if [[ ${KEEP:-0} == 1 ]]; then echo "$TAG: work dir kept: $WORK"; else rm -rf "$WORK"; fi
}

# Build the Linux node (`cargo build --release -p dsoftbus-cli --bin dsoftbus`,
# plus any extra cargo arguments) and set BIN to the binary. Used by the
# namespace tests (netns-test.sh, scale-test.sh, interop-test.sh).
nexus_build_dsoftbus() {
    local tag=$1 target
    shift
    echo "$tag: building (cargo build --release -p dsoftbus-cli --bin dsoftbus${*:+ $*})"
    (cd "$NEXUS_ROOT" && cargo build --release -q -p dsoftbus-cli --bin dsoftbus "$@")
    target=${CARGO_TARGET_DIR:-$NEXUS_ROOT/target}
    [[ $target == /* ]] || target=$NEXUS_ROOT/$target
    BIN=$target/release/dsoftbus
}

# Create namespace <hub> with lo up and a bridge br0 (multicast snooping off,
# so discovery multicast reaches every port), up. Nodes attach with
# `ip -n <hub> link set <veth> master br0 up`.
nexus_ns_hub_bridge() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip -n "$1" link add br0 type bridge
    ip -n "$1" link set br0 type bridge mcast_snooping 0
    ip -n "$1" link set br0 up
}
