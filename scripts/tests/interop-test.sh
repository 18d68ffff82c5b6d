#!/usr/bin/env bash
# One bus across Nexus and Linux: two Nexus VMs (QEMU microvm, TCG) on tap devices
# and two Linux `dsoftbus daemon` nodes, each in its own network namespace, all on
# one bridge (10.77.1.0/24) where dnsmasq serves DHCP. Real multicast, real DHCP.
#
#   linux-a  < nexus-os   : the Linux node dials the VM (OS accepts, binds identity)
#   zz-linux > nexus-os   : the VM dials the Linux node (OS dials per the tie-break)
#   nexus-os < nexus-os-2 : OS to OS, each VM on its own stack and NIC
#
# Required: the OS markers on the UART (node up with its DHCP address, discovery of
# both Linux nodes, identity bound and auth ok for both) and, on both Linux nodes,
# a `dsoftbus peers` row for nexus-os with SESSION yes plus a ping over it.
# Files both ways (dsoftbus::transfer, wire.md §12, on a stream of kind 0x40: both
# sides announce streams/1): linux-a sends the VM a random file (the VM accepts any,
# its line carries the SHA-256 it verified, which must be the file's), and the VM
# sends linux-a a generated one (dsoftbusd.send; linux-a accepts any; the file in
# its inbox must have the SHA-256 the VM offered).
# Needs root (namespaces, tap, bridge) and dnsmasq; without root it says so and
# exits 0. Bounded by INTEROP_TIMEOUT (default 120 s); cleans up on every exit.
#
#   sudo scripts/tests/interop-test.sh           # KEEP=1 keeps the work dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib/nexus.sh
source "$ROOT/scripts/lib/nexus.sh"
TAG=interop-test
TIMEOUT=${INTEROP_TIMEOUT:-120}
OS_ID=nexus-os

if [[ $(id -u) != 0 ]]; then
    echo "$TAG: SKIP: needs root for namespaces and a tap device (CI runs as root; try: sudo $0)"
    exit 0
fi
command -v ip >/dev/null 2>&1 || { echo "$TAG: 'ip' missing (Debian: apt-get install iproute2)" >&2; exit 2; }
if ! command -v dnsmasq >/dev/null 2>&1; then
    # Like qemu-test.sh does for QEMU: root on Debian installs the one package it needs.
    if nexus_is_debian; then
        echo "$TAG: dnsmasq not found; installing the Debian package dnsmasq-base (running as root)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends dnsmasq-base >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends dnsmasq-base >/dev/null; } || true
    fi
    command -v dnsmasq >/dev/null 2>&1 || {
        echo "$TAG: dnsmasq missing (Debian: apt-get install dnsmasq-base; .ci/run installs it)" >&2
        exit 2
    }
fi
QEMU=${QEMU:-qemu-system-x86_64}
nexus_ensure_qemu "$TAG" 0 || exit 2

PFX="nxi$$"
HUB="$PFX-hub"
WORK=$(mktemp -d /tmp/dsoftbus-interop.XXXXXX)
UART="$WORK/uart.log"
UART2="$WORK/uart2.log"
OS2_ID=nexus-os-2
declare -A PID=()
FAILED=1
T0=$SECONDS

cleanup() {
    local rc=$?
    for k in "${!PID[@]}"; do kill "${PID[$k]}" 2>/dev/null || true; done
    sleep 0.3
    for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
    if ((FAILED)); then
        echo "$TAG: --- UART (last 40 lines) ---"
        tail -n 40 "$UART" 2>/dev/null | sed 's/^/   /' || true
        nexus_dump_logs "$WORK" 15 "$UART"
    fi
    nexus_netns_del_prefix "$PFX"
    if [[ ${KEEP:-0} == 1 ]]; then echo "$TAG: work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "$TAG: FAIL: $*"; exit 1; }

# --- build ----------------------------------------------------------------------------
KERNEL_ELF=$(nexus_abspath "${KERNEL_ELF:-$(nexus_default_kernel_elf)}")
nexus_kernel_ready "$TAG" || exit 2
nexus_build_dsoftbus "$TAG"

# --- topology: bridge + dnsmasq + tap in the hub namespace, one veth per Linux node ---
nexus_ns_hub_bridge "$HUB"
ip -n "$HUB" addr add 10.77.1.1/24 brd + dev br0
for t in tap0 tap1; do
    ip -n "$HUB" tuntap add dev "$t" mode tap
    ip -n "$HUB" link set "$t" master br0 up
done
linux_ns() { # $1 name, $2 address
    ip netns add "$PFX-$1"
    ip -n "$HUB" link add "v$1" type veth peer name eth0 netns "$PFX-$1"
    ip -n "$HUB" link set "v$1" master br0 up
    ip -n "$PFX-$1" link set lo up
    ip -n "$PFX-$1" addr add "$2/24" brd + dev eth0
    ip -n "$PFX-$1" link set eth0 up
}
linux_ns la 10.77.1.2
linux_ns lz 10.77.1.3

# --no-ping: dnsmasq otherwise pings each address before offering it, which
# delays every lease by seconds (measured: 6 s of guest time to `dhcp bound`).
ip netns exec "$HUB" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
    --interface=br0 --bind-interfaces --except-interface=lo --user=root --group=root \
    --dhcp-range=10.77.1.100,10.77.1.150,255.255.255.0,10m --dhcp-authoritative --no-ping \
    --dhcp-leasefile="$WORK/leases" --pid-file="$WORK/dnsmasq.pid" --log-dhcp \
    >"$WORK/dnsmasq.log" 2>&1 &
PID[dnsmasq]=$!
echo "$TAG: bridge br0 10.77.1.1/24 with dnsmasq (DHCP 10.77.1.100-150), tap0 for the VM, linux-a 10.77.1.2, zz-linux 10.77.1.3"

# --- the Linux nodes -------------------------------------------------------------------
start_linux() { # $1 ns suffix, $2 device id, [daemon flags...]
    local ns=$1 id=$2
    shift 2
    ip netns exec "$PFX-$ns" "$BIN" --state-dir "$WORK/$ns" daemon --device-id "$id" "$@" \
        >"$WORK/$ns.log" 2>&1 &
    PID[$ns]=$!
}
# Remote calls: linux-a lets nexus-os call its `hello` service (served below);
# nexus-os lets linux-a call its `echo` (samgrd) and nothing else.
start_linux la linux-a --remote-acl nexus-os:hello --accept any --inbox "$WORK/la-inbox"
start_linux lz zz-linux

# linux-a serves `hello` (a Unix socket answering "hello from linux-a"); the VM's
# planned calls (boot options) call hello (allowed by linux-a's ACL) and hidden
# (not in it). linux-a calls the VM's echo (allowed by the VM's ACL) and samgr (not).
HELLO_SOCK=$WORK/hello.sock
python3 - "$HELLO_SOCK" >"$WORK/hello.log" 2>&1 <<'PY' &
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(4)
while True:
    c, _ = s.accept()
    while c.recv(4096):
        pass
    c.sendall(b"hello from linux-a"); c.close()
PY
PID[hello]=$!
for _ in $(seq 50); do [[ -S $HELLO_SOCK ]] && break; sleep 0.1; done
# `serve` talks to linux-a's daemon: wait for its control socket first. The VM's
# planned calls go out as soon as its session with linux-a is up, so `hello` must
# be served before the VMs boot.
for _ in $(seq 100); do "$BIN" --state-dir "$WORK/la" status >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec "$PFX-la" "$BIN" --state-dir "$WORK/la" serve hello --unix "$HELLO_SOCK" >"$WORK/serve.log" 2>&1 &
PID[serve]=$!
for _ in $(seq 50); do grep -q "serving hello" "$WORK/la.log" 2>/dev/null && break; sleep 0.1; done

# --- the VMs -----------------------------------------------------------------------------
start_vm() { # $1 key, $2 device id, $3 tap, $4 MAC, $5 UART log, $6 disk image
    nexus_ensure_disk "$6"
    nexus_qemu_machine_args "$KERNEL_ELF" "dsoftbusd.mode=node dsoftbusd.id=$2${VM_EXTRA[$1]:+ ${VM_EXTRA[$1]}}" "$6"
    local args=() i a
    for ((i = 0; i < ${#NEXUS_QEMU_ARGS[@]}; i++)); do
        a=${NEXUS_QEMU_ARGS[$i]}
        if [[ $a == -netdev ]]; then
            args+=(-netdev "tap,id=n0,ifname=$3,script=no,downscript=no")
            i=$((i + 1))
        elif [[ $a == virtio-net-device,netdev=n0 ]]; then
            args+=("virtio-net-device,netdev=n0,mac=$4")
        else
            args+=("$a")
        fi
    done
    : >"$5"
    ip netns exec "$HUB" "$QEMU" "${args[@]}" -chardev "file,id=ser0,path=$(nexus_qemu_escape "$5")" \
        -serial chardev:ser0 >"$WORK/qemu-$1.log" 2>&1 &
    PID[$1]=$!
    echo "$TAG: VM $2 booting: $QEMU -M microvm -cpu max ... -netdev tap,ifname=$3 (mac $4) -append 'dsoftbusd.mode=node dsoftbusd.id=$2'"
}
# The file the VM generates and sends linux-a (not a multiple of any chunk size).
VM_FILE_BYTES=200003
declare -A VM_EXTRA=(
    [qemu]="dsoftbusd.remote_acl=linux-a:echo dsoftbusd.call=hello@linux-a,hidden@linux-a dsoftbusd.accept=any dsoftbusd.send=linux-a:$VM_FILE_BYTES"
    [qemu2]=""
)
start_vm qemu "$OS_ID" tap0 52:54:00:77:01:01 "$UART" "$WORK/os.disk"
start_vm qemu2 "$OS2_ID" tap1 52:54:00:77:01:02 "$UART2" "$WORK/os2.disk"

# --- wait for both sides ------------------------------------------------------------------
FORBIDDEN=("PANIC" "panic" "FAIL" "kernel: fault" "triple fault")
REQUIRED=(
    "dsoftbusd: node up device=$OS_ID addr=10.77.1."
    "dsoftbusd: discovery peer found device=linux-a"
    "dsoftbusd: discovery peer found device=zz-linux"
    "dsoftbusd: discovery peer found device=$OS2_ID"
    "dsoftbusd: identity bound peer=linux-a"
    "dsoftbusd: auth ok peer=linux-a"
    "dsoftbusd: identity bound peer=zz-linux"
    "dsoftbusd: auth ok peer=zz-linux"
    "dsoftbusd: identity bound peer=$OS2_ID"
    "dsoftbusd: auth ok peer=$OS2_ID"
    "dsoftbusd: session ping ok peer=$OS2_ID"
)
# The second VM: it accepts nexus-os (which dials, being the smaller id).
REQUIRED2=(
    "dsoftbusd: node up device=$OS2_ID addr=10.77.1."
    "dsoftbusd: discovery peer found device=$OS_ID"
    "dsoftbusd: identity bound peer=$OS_ID"
    "dsoftbusd: auth ok peer=$OS_ID"
)
session_row() { # $1 ns suffix: the peers row of nexus-os if it has a session
    "$BIN" --state-dir "$WORK/$1" peers 2>/dev/null | awk -v id="$OS_ID" '$1 == id && $5 == "yes"'
}
deadline=$((SECONDS + TIMEOUT))
while :; do
    for k in qemu qemu2; do
        kill -0 "${PID[$k]}" 2>/dev/null || fail "QEMU ($k) exited early (see $WORK/$k.log)"
    done
    for k in la lz dnsmasq; do kill -0 "${PID[$k]}" 2>/dev/null || fail "$k died"; done
    for f in "${FORBIDDEN[@]}"; do
        for u in "$UART" "$UART2"; do
            # Probe kills are expected (containment proof on every boot).
            if line=$(grep -nF -- "$f" "$u" | grep -vE -- "$NEXUS_PROBE_FAULT_RE" | head -n 1) &&
                [[ -n $line ]]; then
                sleep 0.3
                fail "forbidden marker '$f' on the UART ($(basename "$u")): $line"
            fi
        done
    done
    missing=""
    for m in "${REQUIRED[@]}"; do grep -qF -- "$m" "$UART" || { missing=$m; break; }; done
    if [[ -z $missing ]]; then
        for m in "${REQUIRED2[@]}"; do grep -qF -- "$m" "$UART2" || { missing="$m (on $OS2_ID)"; break; }; done
    fi
    if [[ -z $missing && -n $(session_row la) && -n $(session_row lz) ]]; then break; fi
    if ((SECONDS >= deadline)); then
        [[ -n $missing ]] && echo "$TAG: first missing UART marker: '$missing'"
        [[ -z $(session_row la) ]] && echo "$TAG: linux-a has no session with $OS_ID"
        [[ -z $(session_row lz) ]] && echo "$TAG: zz-linux has no session with $OS_ID"
        fail "not one bus after ${TIMEOUT} s"
    fi
    sleep 0.2
done
elapsed=$((SECONDS - T0))
os_addr=$(grep -oE "dsoftbusd: node up device=$OS_ID addr=[0-9.]+" "$UART" | head -n 1 | sed 's/.*addr=//')
grep -q "DHCPACK(br0) $os_addr" "$WORK/dnsmasq.log" || fail "dnsmasq never acknowledged $os_addr"
declare -A pings=()
for k in la lz; do
    out=$("$BIN" --state-dir "$WORK/$k" ping "$OS_ID" -c 3 -i 0.2 -W 5) || fail "$k cannot ping $OS_ID: $out"
    pings[$k]=$(tail -n 1 <<<"$out")
done

echo "$TAG: OS side (UART of $OS_ID):"
for m in "${REQUIRED[@]}"; do grep -F -- "$m" "$UART" | head -n 1 | sed 's/^/      /'; done
echo "$TAG: OS side (UART of $OS2_ID):"
for m in "${REQUIRED2[@]}"; do grep -F -- "$m" "$UART2" | head -n 1 | sed 's/^/      /'; done
echo "$TAG: Linux side (dsoftbus peers on linux-a):"
"$BIN" --state-dir "$WORK/la" peers | sed 's/^/      /'
echo "$TAG: Linux side (dsoftbus peers on zz-linux):"
"$BIN" --state-dir "$WORK/lz" peers | sed 's/^/      /'
echo "$TAG: pings over the sessions: linux-a ${pings[la]}"
echo "$TAG:                          zz-linux ${pings[lz]}"
echo "$TAG: dnsmasq leased $os_addr to the VM"

# --- remote service calls, both directions, allowed and denied -------------------------
deadline=$((SECONDS + 30))
until grep -q "dsoftbusd: remote call ok peer=linux-a service=hello" "$UART" &&
    grep -q "dsoftbusd: remote call refused peer=linux-a service=hidden" "$UART"; do
    ((SECONDS < deadline)) || fail "the VM's calls to linux-a did not complete: $(grep -h 'remote call' "$UART" | tail -n 3)"
    sleep 0.2
done
echoed=$(ip netns exec "$PFX-la" "$BIN" --state-dir "$WORK/la" call "$OS_ID" echo "ping from linux-a" -W 5) ||
    fail "linux-a's call to $OS_ID's echo failed: $echoed"
[[ $echoed == *"ping from linux-a"* ]] || fail "echo from $OS_ID answered '$echoed'"
denied_rc=0
denied=$(ip netns exec "$PFX-la" "$BIN" --state-dir "$WORK/la" call "$OS_ID" samgr x -W 5 2>&1) || denied_rc=$?
((denied_rc != 0)) || fail "$OS_ID answered a call to samgr that its ACL does not allow: $denied"
grep -q "dsoftbusd: remote proxy denied (service=samgr)" "$UART" ||
    fail "$OS_ID did not log the denied call to samgr"
grep -q "remote call peer=nexus-os service=hidden denied" "$WORK/la.log" ||
    fail "linux-a did not audit the VM's denied call"
echo "$TAG: remote calls:"
grep -hE "remote call ok peer=linux-a|remote call refused peer=linux-a|remote proxy denied \(service=samgr\)|remote call peer=linux-a service=echo allowed" "$UART" | sed 's/^/      VM: /'
grep -h "remote call peer=nexus-os" "$WORK/la.log" | sed 's/^.*INFO /      linux-a: /'
echo "      linux-a: call $OS_ID echo -> '$echoed'; call $OS_ID samgr -> exit $denied_rc (denied)"

# --- files, both directions ----------------------------------------------------------
# Linux -> VM: `dsoftbus send` returns 0 only after the VM's DONE (every file
# verified); the VM's line names the SHA-256 it checked.
head -c 300007 /dev/urandom >"$WORK/to-vm.bin"
want=$(sha256sum "$WORK/to-vm.bin" | cut -d' ' -f1)
sent=$(ip netns exec "$PFX-la" "$BIN" --state-dir "$WORK/la" send "$OS_ID" "$WORK/to-vm.bin" 2>&1) ||
    fail "linux-a's send to $OS_ID failed: $sent"
deadline=$((SECONDS + 20))
until line=$(grep -m1 "dsoftbusd: file received from=linux-a name=to-vm.bin bytes=300007 ok" "$UART"); do
    ((SECONDS < deadline)) || fail "$OS_ID did not report the file from linux-a: $(grep -h 'dsoftbusd: file' "$UART" | tail -n 3)"
    sleep 0.2
done
grep -q "sha256 $want verified" <<<"$line" || fail "$OS_ID verified another SHA-256 than the file's ($want): $line"
# VM -> Linux: the VM offers a generated file once its session with linux-a is up.
deadline=$((SECONDS + 30))
until grep -q "dsoftbusd: file sent to=linux-a name=nexus-$OS_ID-$VM_FILE_BYTES.bin bytes=$VM_FILE_BYTES ok" "$UART"; do
    ((SECONDS < deadline)) || fail "$OS_ID's file to linux-a was not sent: $(grep -h 'dsoftbusd: file' "$UART" | tail -n 3)"
    sleep 0.2
done
offered=$(grep -m1 -oE "dsoftbusd: file offered to=linux-a name=nexus-$OS_ID-$VM_FILE_BYTES.bin bytes=$VM_FILE_BYTES sha256=[0-9a-f]{64}" "$UART" | sed 's/.*sha256=//') ||
    fail "$OS_ID never offered its file with a SHA-256"
got=$(find "$WORK/la-inbox" -name "nexus-$OS_ID-$VM_FILE_BYTES.bin" -type f | head -n 1)
[[ -n $got ]] || fail "nexus-$OS_ID-$VM_FILE_BYTES.bin is not in linux-a's inbox: $(ls -R "$WORK/la-inbox" 2>&1 | head -n 5)"
[[ $(stat -c %s "$got") == "$VM_FILE_BYTES" ]] || fail "$got has $(stat -c %s "$got") bytes, not $VM_FILE_BYTES"
[[ $(sha256sum "$got" | cut -d' ' -f1) == "$offered" ]] || fail "$got does not have the SHA-256 $OS_ID offered ($offered)"
echo "$TAG: files:"
echo "      linux-a -> $OS_ID: to-vm.bin 300007 bytes, sha256 $want verified by the VM"
echo "      $OS_ID -> linux-a: $(basename "$got") $VM_FILE_BYTES bytes, sha256 $offered in linux-a's inbox"
grep -hE "dsoftbusd: file (received|offered|sent)" "$UART" | sed 's/^/      VM: /'

# --- reboot: the identity survives, the Linux pin still matches -----------------------
# linux-a pinned nexus-os's key on first sight. Reboot the VM on the same disk:
# keystored loads the same key, so linux-a's session comes back without `trust`.
fp_before=$(grep -oE "keystored: identity created key=[0-9a-f]+" "$UART" | sed 's/.*key=//')
[[ -n $fp_before ]] || fail "$OS_ID did not create its identity on its fresh disk"
pin_row() { "$BIN" --state-dir "$WORK/la" peers 2>/dev/null | awk -v id="$OS_ID" '$1 == id'; }
pinned_fp=$(pin_row | awk '{print $3}')
[[ $fp_before == "$pinned_fp"* ]] || fail "linux-a pinned $pinned_fp, not $OS_ID's $fp_before"
auths() { grep -c "auth ok peer=$OS_ID " "$WORK/la.log" || true; }
auths_before=$(auths)
kill "${PID[qemu]}" 2>/dev/null || true
wait "${PID[qemu]}" 2>/dev/null || true
UART_REBOOT="$WORK/uart-reboot.log"
T1=$SECONDS
start_vm qemu "$OS_ID" tap0 52:54:00:77:01:01 "$UART_REBOOT" "$WORK/os.disk"
deadline=$((SECONDS + TIMEOUT))
# A new authenticated session in linux-a's log (not the dead one's row).
until grep -q "keystored: identity loaded key=$fp_before" "$UART_REBOOT" &&
    (($(auths) > auths_before)) && [[ -n $(session_row la) ]]; do
    kill -0 "${PID[qemu]}" 2>/dev/null || fail "the rebooted VM exited early"
    if grep -q "keystored: identity created" "$UART_REBOOT"; then
        fail "the rebooted VM made a new identity instead of loading $fp_before"
    fi
    ((SECONDS < deadline)) || fail "no session between linux-a and the rebooted $OS_ID after ${TIMEOUT} s ($(pin_row))"
    sleep 0.2
done
row=$(pin_row)
grep -q "key changed" <<<"$row" && fail "linux-a reports a key change after the reboot: $row"
echo "$TAG: reboot: $OS_ID loaded key=$fp_before from its disk; linux-a's pin matched, session back in $((SECONDS - T1)) s without trust:"
echo "      $row"
# The VM kept its own pins too (keystored): they were loaded at boot.
grep -qE "dsoftbusd: [1-9][0-9]* known-peer pins loaded from keystored" "$UART_REBOOT" ||
    fail "the rebooted VM did not load its known-peer pins: $(grep -h 'pins' "$UART_REBOOT" | head -n 2)"
grep -h "known-peer pins loaded" "$UART_REBOOT" | sed 's/^/      /'

# A device that comes back as linux-a with another key is refused by the VM,
# whose pin for linux-a survived the reboot (without persistence it would be
# accepted as new).
kill "${PID[la]}" 2>/dev/null || true
wait "${PID[la]}" 2>/dev/null || true
mv "$WORK/la" "$WORK/la-old"
auths_reboot=$(grep -c "auth ok peer=linux-a" "$UART_REBOOT" || true)
start_linux la linux-a
deadline=$((SECONDS + 30))
until grep -qE "identity mismatch peer=linux-a|announce refused \(pinned to another key\) device=linux-a" "$UART_REBOOT"; do
    ((SECONDS < deadline)) || fail "the VM did not refuse linux-a under a new key (its pin should have survived the reboot)"
    sleep 0.2
done
(($(grep -c "auth ok peer=linux-a" "$UART_REBOOT" || true) == auths_reboot)) ||
    fail "the VM authenticated linux-a under a new key"
echo "$TAG: linux-a back with a new key: refused by $OS_ID (pin kept across the reboot):"
grep -hE "identity mismatch peer=linux-a|announce refused \(pinned to another key\) device=linux-a" "$UART_REBOOT" | head -n 1 | sed 's/^/      /'
FAILED=0
echo "$TAG: PASS (one bus: $OS_ID at $os_addr with linux-a and zz-linux, both directions of the tie-break, OS to OS with $OS2_ID, remote calls both ways (allowed and denied), and $OS_ID rebooted with its identity and pins; ${elapsed} s to the first bus)"
