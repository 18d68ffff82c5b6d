#!/usr/bin/env bash
# Two Nexus VMs on one virtual Ethernet link, rootless: each QEMU's NIC is a
# `-netdev dgram` endpoint on 127.0.0.1 sending to the other's port, so frames go
# only from one QEMU to the other over the host's loopback (no root, no tap, no
# bridge, no multicast socket, no host service). Nobody serves DHCP on that link:
# each VM must fall back to an RFC 3927 link-local address, find the other by
# multicast discovery and run an authenticated soft-bus session with it.
#
#   ./scripts/os2vm.sh                       # both cases, builds the image first
#   SKIP_BUILD=1 OS2VM_CASES=same-mac ./scripts/os2vm.sh
#
# Cases (OS2VM_CASES, default "distinct same-mac"):
#   distinct   VMs os2vm-a and os2vm-b with MACs 52:54:00:6e:00:01 / :02
#   same-mac   the same two VMs, both with MAC 52:54:00:6e:00:01: both derive the
#              same first candidate; the conflict must be seen (`net: link-local
#              conflict`) and the VMs must end on different addresses
# Each VM (dsoftbusd.mode=node, its own dsoftbusd.id) must print, within
# OS2VM_TIMEOUT seconds (default 30) per case:
#   net: dhcp unavailable; link-local 169.254.x.y/16   (and never `net: dhcp bound`)
#   dsoftbusd: discovery cross-vm up (multicast 239.42.0.1) first peer=<other id>
#              from=<the other VM's link-local address>
#   dsoftbusd: cross-vm session ok peer=<other id>
# Remote service calls over that session (samgrd + dsoftbusd, deny-by-default ACL
# from the boot option dsoftbusd.remote_acl): VM a allows os2vm-b to call `samgr`,
# VM b allows os2vm-a to call `samgr`; each resolves `echo` (registered by samgrd)
# on the other (dsoftbusd.resolve=echo@<other id>), and a also calls `echo` on b
# directly (dsoftbusd.call=echo@os2vm-b), which b's ACL does not allow. Required:
#   both:  SELFTEST: remote resolve ok peer=<other id> service=echo
#   both:  dsoftbusd: remote call peer=<other id> service=samgr allowed
#   b:     dsoftbusd: remote call peer=os2vm-a service=echo denied (acl)
#          dsoftbusd: remote proxy denied (service=echo)
#   a:     dsoftbusd: remote call refused peer=os2vm-b service=echo: denied
#   never: dsoftbusd: remote resolve failed
# File transfer over that session (dsoftbus::transfer on session data messages): VM a
# sends b a generated file (dsoftbusd.send=os2vm-b:$FILE_BYTES) and b accepts any
# authenticated peer (dsoftbusd.accept=any); b sends a a small one, which a denies
# (no dsoftbusd.accept: the default is none). Case distinct: both VMs announce
# streams/1, so both transfers go on a stream of kind 0x40 (wire.md §12 carrier
# rule); case same-mac: b boots with dsoftbusd.streams=off, so both go in session
# data messages. Required:
#   a:     dsoftbusd: file offered to=os2vm-b ... sha256=<h> (try 1 of 3; carrier <that carrier>)
#   b:     ... file received ... ok (sha256 <the same h> verified)
#   b:     dsoftbusd: file received from=os2vm-a name=nexus-os2vm-a-<n>.bin bytes=<n> ok
#   a:     dsoftbusd: file sent to=os2vm-b name=nexus-os2vm-a-<n>.bin bytes=<n> ok
#   a:     dsoftbusd: file offer denied from=os2vm-b name=nexus-os2vm-b-<m>.bin bytes=<m> reason=declined
#   b:     dsoftbusd: file send to=os2vm-a name=nexus-os2vm-b-<m>.bin bytes=<m> failed: denied (declined)
#   never: dsoftbusd: file received from=os2vm-b (on a)
# and no forbidden line (PANIC, panic, FAIL, kernel: fault other than the probes'
# expected kills, triple fault). The two addresses must differ.
#
# Environment: OS2VM_CASES, OS2VM_TIMEOUT (seconds per case), OS2VM_DIR (logs,
# default target/qemu/os2vm), QEMU, KERNEL_ELF, SKIP_BUILD=1.
# Exit status like scripts/qemu-test.sh: 0 pass, 1 a VM broke the contract,
# 2 setup problem (QEMU missing, build failed, bad environment).
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/nexus.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nexus.sh"
TAG=os2vm

CASES=${OS2VM_CASES:-distinct same-mac}
CASE_TIMEOUT=${OS2VM_TIMEOUT:-30}
QEMU_OVERRIDDEN=0
[[ -n ${QEMU-} ]] && QEMU_OVERRIDDEN=1
QEMU=${QEMU:-qemu-system-x86_64}
KERNEL_ELF=$(nexus_abspath "${KERNEL_ELF:-$(nexus_default_kernel_elf)}")
WORK=$(nexus_abspath "${OS2VM_DIR:-$NEXUS_ROOT/target/qemu/os2vm}")
MAC_A=52:54:00:6e:00:01
MAC_B=52:54:00:6e:00:02
ID_A=os2vm-a
ID_B=os2vm-b
# Remote-call options of each VM (see the header).
RPC_A="dsoftbusd.remote_acl=$ID_B:samgr dsoftbusd.resolve=echo@$ID_B dsoftbusd.call=echo@$ID_B"
RPC_B="dsoftbusd.remote_acl=$ID_A:samgr dsoftbusd.resolve=echo@$ID_A"
# File transfer options (see the header): a -> b accepted, b -> a denied.
FILE_BYTES=262144
DENIED_BYTES=4096
FILE_A="dsoftbusd.send=$ID_B:$FILE_BYTES"
FILE_B="dsoftbusd.accept=any dsoftbusd.send=$ID_A:$DENIED_BYTES"
# A probe killed by the kernel as it must be (shared with scripts/qemu-test.sh).
PROBE_KILL_RE="^$NEXUS_PROBE_FAULT_RE"
FORBIDDEN_RE='PANIC|panic|FAIL|kernel: fault|triple fault'

if ! [[ $CASE_TIMEOUT =~ ^[0-9]+$ ]] || ((CASE_TIMEOUT == 0)); then
    echo "$TAG: OS2VM_TIMEOUT='$CASE_TIMEOUT' must be a positive number of seconds" >&2
    exit 2
fi
for c in $CASES; do
    case $c in
        distinct | same-mac) ;;
        *)
            echo "$TAG: unknown case '$c' in OS2VM_CASES (cases: distinct same-mac)" >&2
            exit 2
            ;;
    esac
done

nexus_kernel_ready "$TAG" || exit 2
nexus_ensure_qemu "$TAG" "$QEMU_OVERRIDDEN" || exit 2
if ! "$QEMU" -netdev help 2>/dev/null | grep -qx dgram; then
    echo "$TAG: $QEMU has no '-netdev dgram' backend (QEMU 7.2 or later; Debian 12 has it)" >&2
    exit 2
fi
mkdir -p "$WORK"

PIDS=()
stop_vms() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for i in $(seq 40); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_vms EXIT
trap 'stop_vms; echo "$TAG: interrupted" >&2; exit 130' INT TERM

now_us() { printf '%s\n' "${EPOCHREALTIME//[.,]/}"; }
fmt_s() { printf '%d.%02d' $(($1 / 1000000)) $(($1 % 1000000 / 10000)); }

# Two free UDP ports on 127.0.0.1 (the kernel picks them; QEMU binds them right after).
free_ports() {
    python3 - <<'EOF' 2>/dev/null || echo "$((20000 + RANDOM % 20000)) $((40000 + RANDOM % 20000))"
import socket
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
EOF
}

# $1 UART log, $2 device id, $3 MAC, $4 our UDP port, $5 the other VM's UDP port,
# $6 more kernel options.
start_vm() {
    local netdev="dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$4"
    netdev+=",remote.type=inet,remote.host=127.0.0.1,remote.port=$5"
    local cmdline="dsoftbusd.mode=node dsoftbusd.id=$2${6:+ $6}"
    nexus_qemu_machine_args_netdev "$KERNEL_ELF" "$cmdline" "$netdev" "$3"
    : >"$1"
    "$QEMU" "${NEXUS_QEMU_ARGS[@]}" -chardev "file,id=ser0,path=$(nexus_qemu_escape "$1")" \
        -serial chardev:ser0 </dev/null >"${1%.log}.qemu-stderr.log" 2>&1 &
    PIDS+=("$!")
    echo "$TAG:   VM $2: mac $3, -netdev dgram 127.0.0.1:$4 -> 127.0.0.1:$5, -append '$cmdline'"
}

# The text of each UART line (timestamp removed).
text_of() { sed -E 's/^\[ *[0-9]+\.[0-9]+\] //; s/\r$//' "$1"; }
# First line of log $1 containing $2 (text only), or nothing.
first_line() { text_of "$1" | grep -F -m1 -- "$2" || true; }
# Guest time (s) of the first line of log $1 containing $2, or "?".
guest_time() {
    local t
    t=$(grep -F -m1 -- "$2" "$1" | sed -nE 's/^\[ *([0-9]+\.[0-9]+)\].*/\1/p' || true)
    printf '%s\n' "${t:-?}"
}
# Forbidden lines of log $1 as "line N: text" (probe kills excepted).
forbidden_lines() {
    text_of "$1" | awk -v f="$FORBIDDEN_RE" -v ok="$PROBE_KILL_RE" \
        '$0 ~ f && $0 !~ ok { print "line " NR ": " $0 }'
}
# The link-local address a VM claimed (last one, should it have changed).
ll_addr() { text_of "$1" | sed -nE 's/^net: dhcp unavailable; link-local ([0-9.]+)\/16.*/\1/p' | tail -n1; }

# Remote-call lines VM $1 (a or b) must print.
rpc_markers() {
    if [[ $1 == a ]]; then
        printf '%s\n' "SELFTEST: remote resolve ok peer=$ID_B service=echo " \
            "dsoftbusd: remote call peer=$ID_B service=samgr allowed" \
            "dsoftbusd: remote call refused peer=$ID_B service=echo: denied"
    else
        printf '%s\n' "SELFTEST: remote resolve ok peer=$ID_A service=echo " \
            "dsoftbusd: remote call peer=$ID_A service=samgr allowed" \
            "dsoftbusd: remote call peer=$ID_A service=echo denied (acl)" \
            "dsoftbusd: remote proxy denied (service=echo)"
    fi
}

# The transfer carrier of the case running (set by run_case).
CARRIER="a stream of kind 0x40"
# File-transfer lines VM $1 (a or b) must print.
file_markers() {
    local sent="name=nexus-$ID_A-$FILE_BYTES.bin bytes=$FILE_BYTES"
    local denied="name=nexus-$ID_B-$DENIED_BYTES.bin bytes=$DENIED_BYTES"
    if [[ $1 == a ]]; then
        printf '%s\n' "dsoftbusd: file offered to=$ID_B $sent sha256=" \
            "dsoftbusd: file sent to=$ID_B $sent ok" \
            "dsoftbusd: file offer denied from=$ID_B $denied reason=declined"
    else
        printf '%s\n' "dsoftbusd: file received from=$ID_A $sent ok" \
            "dsoftbusd: file send to=$ID_A $denied failed: denied (declined)"
    fi
}

# Has VM log $1 (peer id $2, VM $3) shown everything we wait for?
vm_done() {
    local m
    grep -qF "net: dhcp unavailable; link-local 169.254." "$1" &&
        grep -qF "dsoftbusd: discovery cross-vm up (multicast 239.42.0.1) first peer=$2 " "$1" &&
        grep -qF "dsoftbusd: cross-vm session ok peer=$2 " "$1" || return 1
    while IFS= read -r m; do
        grep -qF -- "$m" "$1" || return 1
    done < <(rpc_markers "$3"; file_markers "$3")
}

FAILS=()
fail() { FAILS+=("$*"); }

# $1 case name, $2 MAC of VM b.
run_case() {
    local name=$1 mac_b=$2 log_a="$WORK/$1-a.log" log_b="$WORK/$1-b.log"
    local ports pa pb start now stop="" case_fails=${#FAILS[@]}
    ports=$(free_ports)
    read -r pa pb <<<"$ports"
    echo "$TAG: case $name: two VMs on a rootless loopback link, no DHCP server (logs in $WORK)"
    start=$(now_us)
    local streams_b=""
    CARRIER="a stream of kind 0x40"
    if [[ $name == same-mac ]]; then
        streams_b=" dsoftbusd.streams=off"
        CARRIER="session data messages"
    fi
    start_vm "$log_a" "$ID_A" "$MAC_A" "$pa" "$pb" "$RPC_A $FILE_A"
    start_vm "$log_b" "$ID_B" "$mac_b" "$pb" "$pa" "$RPC_B $FILE_B$streams_b"
    while :; do
        sleep 0.2
        now=$(now_us)
        if vm_done "$log_a" "$ID_B" a && vm_done "$log_b" "$ID_A" b; then
            stop=done
        elif [[ -n $(forbidden_lines "$log_a")$(forbidden_lines "$log_b") ]]; then
            sleep 0.3 # a little more log for context
            stop=forbidden
        elif ! kill -0 "${PIDS[0]}" 2>/dev/null || ! kill -0 "${PIDS[1]}" 2>/dev/null; then
            stop=exited
        elif ((now - start >= CASE_TIMEOUT * 1000000)); then
            stop=timeout
        fi
        [[ -n $stop ]] && break
    done
    local elapsed=$(($(now_us) - start))
    stop_vms

    local vm log id peer mac addr other f
    local addr_a addr_b
    addr_a=$(ll_addr "$log_a")
    addr_b=$(ll_addr "$log_b")
    for vm in a b; do
        if [[ $vm == a ]]; then
            log=$log_a id=$ID_A peer=$ID_B mac=$MAC_A addr=$addr_a other=$addr_b
        else
            log=$log_b id=$ID_B peer=$ID_A mac=$mac_b addr=$addr_b other=$addr_a
        fi
        echo "$TAG:   [$id] address ${addr:-none} (mac $mac)"
        for f in "net: virtio-net up mac=" "net: link-local conflict" \
            "net: dhcp unavailable; link-local " "SELFTEST: icmp ping skipped" \
            "dsoftbusd: node up device=" "dsoftbusd: discovery cross-vm up" \
            "dsoftbusd: session connect peer=" "dsoftbusd: cross-vm session ok peer=" \
            "SELFTEST: remote resolve ok" "dsoftbusd: remote resolve failed" \
            "dsoftbusd: remote call peer=$peer service=samgr" \
            "dsoftbusd: remote call peer=$peer service=echo" \
            "dsoftbusd: remote proxy denied" "dsoftbusd: remote call refused" \
            "dsoftbusd: file offered" "dsoftbusd: file offer accepted" "dsoftbusd: file received" "dsoftbusd: file sent" \
            "dsoftbusd: file offer denied" "dsoftbusd: file send to="; do
            local l
            l=$(first_line "$log" "$f")
            [[ -n $l ]] && printf '%s:     guest %9s s | %s\n' "$TAG" "$(guest_time "$log" "$f")" "$l"
        done
        while IFS= read -r f; do
            [[ -n $f ]] && fail "$name/$id: forbidden $f"
        done < <(forbidden_lines "$log" | head -n 5)
        [[ -n $addr ]] || fail "$name/$id: no 'net: dhcp unavailable; link-local 169.254.x.y/16' line"
        [[ -z $(first_line "$log" "net: dhcp bound") ]] ||
            fail "$name/$id: 'net: dhcp bound' on a link without a DHCP server: $(first_line "$log" "net: dhcp bound")"
        grep -qF "dsoftbusd: node up device=$id addr=${addr:-none} " "$log" ||
            fail "$name/$id: no 'dsoftbusd: node up device=$id addr=${addr:-?}' line"
        grep -qF "dsoftbusd: discovery cross-vm up (multicast 239.42.0.1) first peer=$peer from=${other:-none}:" "$log" ||
            fail "$name/$id: no 'dsoftbusd: discovery cross-vm up (multicast 239.42.0.1) first peer=$peer from=${other:-?}:...'"
        grep -qF "dsoftbusd: cross-vm session ok peer=$peer " "$log" ||
            fail "$name/$id: no 'dsoftbusd: cross-vm session ok peer=$peer'"
        while IFS= read -r f; do
            grep -qF -- "$f" "$log" || fail "$name/$id: no '$f'"
        done < <(rpc_markers "$vm"; file_markers "$vm")
        [[ -z $(first_line "$log" "dsoftbusd: remote resolve failed") ]] ||
            fail "$name/$id: $(first_line "$log" "dsoftbusd: remote resolve failed")"
    done
    # The file went on the case's carrier, and b verified the hash a offered.
    local offered hash
    offered=$(first_line "$log_a" "dsoftbusd: file offered to=$ID_B name=nexus-$ID_A-$FILE_BYTES.bin bytes=$FILE_BYTES sha256=")
    [[ $offered == *"(try 1 of 3; carrier $CARRIER)" ]] ||
        fail "$name/$ID_A: the file was not offered on $CARRIER: ${offered:-no 'file offered' line}"
    hash=$(sed -n 's/.* sha256=\([0-9a-f]\{64\}\) .*/\1/p' <<<"$offered")
    grep -qF "dsoftbusd: file received from=$ID_A name=nexus-$ID_A-$FILE_BYTES.bin bytes=$FILE_BYTES ok (sha256 ${hash:-?} verified)" "$log_b" ||
        fail "$name/$ID_B: no 'file received ... ok (sha256 ${hash:-?} verified)' matching the offer"
    [[ -z $(first_line "$log_a" "dsoftbusd: file received from=$ID_B") ]] ||
        fail "$name/$ID_A: stored a file it must deny (accept=none): $(first_line "$log_a" "dsoftbusd: file received from=$ID_B")"
    [[ -n $addr_a && $addr_a == "$addr_b" ]] && fail "$name: both VMs ended on $addr_a"
    if [[ $name == same-mac ]]; then
        local conflicts
        conflicts=$(($(grep -cF "net: link-local conflict " "$log_a" || true) + $(grep -cF "net: link-local conflict " "$log_b" || true)))
        ((conflicts >= 1)) || fail "$name: the VMs share a MAC but neither printed 'net: link-local conflict'"
        echo "$TAG:   link-local conflicts seen: $conflicts"
    fi
    case $stop in
        done) ;;
        forbidden) fail "$name: forbidden line; stopped the VMs" ;;
        exited) fail "$name: a QEMU exited early (see $WORK/$name-*.qemu-stderr.log)" ;;
        timeout) fail "$name: OS2VM_TIMEOUT=${CASE_TIMEOUT}s elapsed before both VMs printed every marker" ;;
    esac
    if ((${#FAILS[@]} > case_fails)); then
        for log in "$log_a" "$log_b"; do
            echo "$TAG:   --- $(basename "$log") (last 25 lines) ---"
            tail -n 25 "$log" | sed 's/^/     /'
            [[ -s ${log%.log}.qemu-stderr.log ]] && sed 's/^/     qemu: /' "${log%.log}.qemu-stderr.log"
        done
        echo "$TAG: case $name FAIL ($(fmt_s "$elapsed") s host)"
    else
        echo "$TAG: case $name ok: $ID_A $addr_a <-> $ID_B $addr_b;" \
            "link-local at $(guest_time "$log_a" "net: dhcp unavailable")/$(guest_time "$log_b" "net: dhcp unavailable") s guest," \
            "cross-vm session ok at $(guest_time "$log_a" "dsoftbusd: cross-vm session ok")/$(guest_time "$log_b" "dsoftbusd: cross-vm session ok") s guest;" \
            "$(fmt_s "$elapsed") s host"
    fi
}

T0=$(now_us)
n=0
for c in $CASES; do
    n=$((n + 1))
    case $c in
        distinct) run_case distinct "$MAC_B" ;;
        same-mac) run_case same-mac "$MAC_A" ;;
    esac
done
if ((${#FAILS[@]})); then
    for f in "${FAILS[@]}"; do echo "$TAG: FAIL: $f"; done
    echo "$TAG: FAIL (${#FAILS[@]} problems in $n cases; $(fmt_s $(($(now_us) - T0))) s)"
    exit 1
fi
echo "$TAG: PASS ($n cases; $(fmt_s $(($(now_us) - T0))) s)"
