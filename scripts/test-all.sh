#!/usr/bin/env bash
# Run every check Nexus has, in order, stopping at the first failure.
# This is the README's test command and what .ci/run executes.
#
#   ./scripts/test-all.sh
#
# Steps: formatting and clippy for both workspaces, host tests, the harness
# self-test, the QEMU marker run, and the broken-guest proof (a guest told to
# panic must make the harness fail and name the failure).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The canonical runs below must not inherit a developer's overrides.
unset KERNEL_ARGS UART_LOG SKIP_BUILD KERNEL_ELF NETDEV_OPTS RUN_UNTIL_MARKER RUN_TIMEOUT ALLOW_FAULT_TASKS DISK KEEP_DISK

STEP=0
START=$SECONDS
CURRENT=""
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo
        echo "test-all: FAILED at step $STEP: $CURRENT (exit $rc)"
    fi
}
trap on_exit EXIT

section() {
    STEP=$((STEP + 1))
    CURRENT=$1
    echo
    echo "=== [$STEP] $1 ($((SECONDS - START)) s)"
}

# Run one step: section header, then the command; any failure stops the script.
step() {
    section "$1"
    shift
    echo "+ $*"
    "$@"
}

step "cargo fmt --check (root workspace)" cargo fmt --all --check
step "cargo fmt --check (source workspace)" bash -c 'cd source && cargo fmt --all --check'
step "cargo clippy -D warnings (root workspace; nexus-recstore also no_std)" bash -c 'cargo clippy --workspace --all-targets -- -D warnings && cargo clippy -p nexus-recstore --no-default-features -- -D warnings'
step "cargo clippy -D warnings (source workspace)" bash -c 'cd source && cargo clippy --workspace -- -D warnings'
step "cargo test (root workspace: userspace libraries and host tools)" cargo test --workspace
step "cargo test (source workspace: pure kernel logic)" bash -c 'cd source && cargo test -p nexus-elf -p nexus-abi -p nexus-blkclient -p nexus-keyclient -p nexus-samgrclient && cargo test -p dsoftbusd --lib'
step "harness self-test (fake QEMU)" scripts/tests/harness-test.sh

step "QEMU marker contract" env RUN_UNTIL_MARKER=1 RUN_TIMEOUT=90s ./scripts/qemu-test.sh
step "kernel W^X: the kernel writes its text and runs its data; the MMU must stop both (scripts/tests/kernel-wx-test.sh)" \
    env SKIP_BUILD=1 scripts/tests/kernel-wx-test.sh

# Broken-guest proof: ipc-selftest.crash=1 makes a service panic. The harness must
# FAIL (status 1, not a setup error) and say which marker broke the contract.
section "broken guest must fail (KERNEL_ARGS=ipc-selftest.crash=1)"
BROKEN_LOG=target/qemu/uart-broken.log
echo "+ KERNEL_ARGS=ipc-selftest.crash=1 RUN_UNTIL_MARKER=1 RUN_TIMEOUT=60s UART_LOG=$BROKEN_LOG SKIP_BUILD=1 ./scripts/qemu-test.sh"
broken_rc=0
broken_out=$(KERNEL_ARGS="ipc-selftest.crash=1" RUN_UNTIL_MARKER=1 RUN_TIMEOUT=60s \
    UART_LOG=$BROKEN_LOG SKIP_BUILD=1 ./scripts/qemu-test.sh 2>&1) || broken_rc=$?
printf '%s\n' "$broken_out" | sed 's/^/  > /'
if ((broken_rc != 1)); then
    echo "test-all: the broken guest gave harness status $broken_rc; want 1 (contract failure)"
    exit 1
fi
if ! grep -qF "qemu-test: FAIL: forbidden marker 'PANIC' at line" <<<"$broken_out"; then
    echo "test-all: the harness failed the broken guest but did not name the PANIC line"
    exit 1
fi
echo "broken-guest proof: harness failed as it must and named the panic"

# Fault proof: ipc-selftest.crash=fault touches unmapped memory. The kernel's
# page-fault handler (on its IST stack) must print the fault and end the run with
# the failure status: the harness fails and names the fault line.
section "CPU fault must fail cleanly (KERNEL_ARGS=ipc-selftest.crash=fault)"
fault_rc=0
fault_out=$(KERNEL_ARGS="ipc-selftest.crash=fault" RUN_TIMEOUT=60s \
    UART_LOG=target/qemu/uart-fault.log SKIP_BUILD=1 ./scripts/qemu-test.sh 2>&1) || fault_rc=$?
printf '%s\n' "$fault_out" | grep -E "FAIL|fault" | sed 's/^/  > /'
if ((fault_rc != 1)); then
    echo "test-all: the faulting guest gave harness status $fault_rc; want 1 (contract failure)"
    exit 1
fi
if ! grep -qF "forbidden marker 'kernel: fault' at line" <<<"$fault_out" ||
    ! grep -qF "guest reported failure" <<<"$fault_out"; then
    echo "test-all: the fault was not reported as a fault line plus a guest failure status"
    exit 1
fi
echo "fault proof: page fault reported by the kernel, run failed with the guest's failure status"

# The DHCP marker must report the lease, not a constant: boot on another usernet
# subnet and expect that lease.
section "DHCP marker follows the lease (NETDEV_OPTS=net=10.9.0.0/24)"
ALT_LOG=target/qemu/uart-alt-subnet.log
echo "+ NETDEV_OPTS=net=10.9.0.0/24 RUN_UNTIL_MARKER=1 RUN_TIMEOUT=60s UART_LOG=$ALT_LOG SKIP_BUILD=1 ./scripts/qemu-test.sh"
NETDEV_OPTS=net=10.9.0.0/24 RUN_UNTIL_MARKER=1 RUN_TIMEOUT=60s UART_LOG=$ALT_LOG SKIP_BUILD=1 \
    ./scripts/qemu-test.sh >/dev/null
if ! grep -qF "net: dhcp bound 10.9.0.15/24 gw=10.9.0.2" "$ALT_LOG"; then
    echo "test-all: on net=10.9.0.0/24 the DHCP marker did not report 10.9.0.15/24 gw=10.9.0.2"
    grep -F "net: dhcp" "$ALT_LOG" || true
    exit 1
fi
grep -F "net: dhcp bound" "$ALT_LOG"

# The dual-node proof must also hold while the host floods the guest's discovery
# port (junk, oversized datagrams, valid announces for random fake ids).
step "discovery flood from the host during the dual-node proof" env SKIP_BUILD=1 scripts/tests/flood-test.sh

# Preemption: a probe that spins forever without yielding (init.probes=spin) must
# not stop the dual-node proof, and the kernel's stats must show its CPU share.
section "a process that never yields cannot starve the others (init.probes=spin)"
SPIN_LOG=target/qemu/uart-spin.log
echo "+ KERNEL_ARGS='dsoftbusd.mode=dual-node init.probes=spin kernel.stats_ms=100' RUN_UNTIL_MARKER=1 RUN_TIMEOUT=90s UART_LOG=$SPIN_LOG SKIP_BUILD=1 ./scripts/qemu-test.sh"
KERNEL_ARGS="dsoftbusd.mode=dual-node init.probes=spin kernel.stats_ms=100" RUN_UNTIL_MARKER=1 \
    RUN_TIMEOUT=90s UART_LOG=$SPIN_LOG SKIP_BUILD=1 ./scripts/qemu-test.sh | tail -n 1
if ! grep -qE "kernel: stats .* probe-spin=[0-9]+%" "$SPIN_LOG"; then
    echo "test-all: no kernel stats line shows probe-spin's CPU share"
    exit 1
fi
grep -E "kernel: stats .* probe-spin=" "$SPIN_LOG" | tail -n 2

# Fault containment with restart: a daemon killed by a CPU fault is restarted by
# init, its peers get fresh channels, the proof completes, and every frame the dead
# process held came back (the reap line's returned == charged; the shutdown line's
# free + charged + kernel == total, "balanced").
crash_restart() { # <name> <kernel args> <log> <required line>...
    local name=$1 args=$2 log=$3 line
    shift 3
    section "$name"
    echo "+ ALLOW_FAULT_TASKS=${args%%.*} KERNEL_ARGS='$args' RUN_TIMEOUT=90s UART_LOG=$log SKIP_BUILD=1 ./scripts/qemu-test.sh"
    ALLOW_FAULT_TASKS=${args%%.*} KERNEL_ARGS="$args" RUN_TIMEOUT=90s UART_LOG=$log SKIP_BUILD=1 \
        ./scripts/qemu-test.sh | tail -n 1
    for line in "$@" "(balanced)"; do
        if ! grep -qF -- "$line" "$log"; then
            echo "test-all: '$line' missing from $log"
            exit 1
        fi
    done
    grep -E "crashing on purpose|process killed|reaped|restarting|reconnected|new client|all finite" "$log" |
        grep -v "task=probe-\|init: probe-" | sed 's/^/  /'
}
crash_restart "dsoftbusd killed after its first session is restarted and proves again" \
    "dsoftbusd.crash=after-session dsoftbusd.mode=dual-node" target/qemu/uart-crash-dsoftbusd.log \
    "kernel: fault page-fault task=dsoftbusd" "init: restarting dsoftbusd (attempt 1/3)" \
    "netstackd: client dsoftbusd gone; its sockets are torn down" \
    "netstackd: new client dsoftbusd (granted by init)"
if (($(grep -c "dsoftbusd: dual-node session ok" target/qemu/uart-crash-dsoftbusd.log) < 2)); then
    echo "test-all: the restarted dsoftbusd did not reach 'dual-node session ok' again"
    exit 1
fi
crash_restart "netstackd killed after DHCP is restarted; its client reconnects" \
    "netstackd.crash=after-dhcp dsoftbusd.mode=dual-node" target/qemu/uart-crash-netstackd.log \
    "kernel: fault page-fault task=netstackd" "init: restarting netstackd (attempt 1/3)" \
    "selftest-client: netstackd connection lost" "selftest-client: reconnected to netstackd"
if (($(grep -c "net: dhcp bound " target/qemu/uart-crash-netstackd.log) < 2)); then
    echo "test-all: the restarted netstackd did not bind DHCP again"
    exit 1
fi

# The device identity lives in keystored on the disk: the same fingerprint after a
# reboot, a corrupt store refused loudly (no session), keystored.reset=1 recovers.
step "device identity survives reboots; bad storage is loud (scripts/tests/identity-test.sh)" \
    env SKIP_BUILD=1 scripts/tests/identity-test.sh

# Kill the VM (SIGKILL) at random points while keystored creates the identity, then
# boot again on the same disk: the store always opens; a committed identity survives.
step "VM killed during the key store's first writes (scripts/tests/powercut-test.sh)" \
    env SKIP_BUILD=1 POWERCUT_ROUNDS=8 scripts/tests/powercut-test.sh

# netstackd alone holds the NIC: dsoftbusd must not even link the driver crate.
section "dsoftbusd does not depend on virtio-drivers"
if (cd source && cargo tree -p dsoftbusd -e normal --prefix none) | grep -q '^virtio-drivers'; then
    echo "test-all: dsoftbusd depends on virtio-drivers"
    exit 1
fi
echo "dsoftbusd dependency tree has no virtio-drivers"

# ---------------------------------------------------------------------------------
# LATER STEPS GO HERE (e.g. namespace tests, multi-VM runs). Keep them fail-fast:
#   step "namespace tests" scripts/tests/netns-test.sh
# ---------------------------------------------------------------------------------

# Linux nodes (`dsoftbus`, userspace/dsoftbus-cli) in network namespaces: 8-node
# discovery and pings, impostor, flood, restart, 256 MiB send vs plain TCP.
# Needs root; without it the script prints a SKIP line and passes.
step "Linux nodes in network namespaces (scripts/tests/netns-test.sh)" scripts/tests/netns-test.sh

# Scale: 8 Linux nodes start at once; full-mesh time, RSS, CPU, announce traffic
# (NODES=32 for the full run in docs/performance.md). Needs root (SKIP otherwise).
step "Linux mesh scale, 8 nodes (scripts/tests/scale-test.sh)" scripts/tests/scale-test.sh

# One bus across OS and Linux: the VM (dsoftbusd.mode=node) on a tap device, two
# Linux nodes, dnsmasq DHCP, all on one bridge in namespaces. Needs root (SKIP otherwise).
step "OS<->Linux interop on a bridge (scripts/tests/interop-test.sh)" scripts/tests/interop-test.sh

# Two VMs on a rootless loopback link (QEMU -netdev dgram on 127.0.0.1), no DHCP:
# link-local addresses, multicast discovery and a session across VMs; then the same
# with both VMs on one MAC (the address conflict must be seen and resolved). No root.
step "two VMs, link-local, cross-VM session (scripts/os2vm.sh)" env SKIP_BUILD=1 scripts/os2vm.sh

echo
echo "test-all: PASS ($STEP steps, $((SECONDS - START)) s)"
