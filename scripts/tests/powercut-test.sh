#!/usr/bin/env bash
# Kill the VM while keystored is creating the identity, then boot again on the same
# disk, N times (issue 14): after every restart the store must open (never
# "store corrupt"), and an identity the first boot reported as created (the line is
# printed after the store's put returned) must be the one loaded.
#
#   POWERCUT_ROUNDS=8 SKIP_BUILD=1 scripts/tests/powercut-test.sh
#
# QEMU is killed with SIGKILL at a random point between 40 and 400 ms after start;
# the host keeps what QEMU already wrote (page cache), so this covers cuts between
# the store's sector writes. Torn sectors and lost unflushed writes are covered by
# the host tests of nexus-recstore (docs/reliability.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/nexus.sh
source scripts/lib/nexus.sh
TAG=powercut-test
ROUNDS=${POWERCUT_ROUNDS:-8}
QEMU=${QEMU:-qemu-system-x86_64}
KERNEL_ELF=$(nexus_abspath "${KERNEL_ELF:-$(nexus_default_kernel_elf)}")
nexus_kernel_ready "$TAG" || exit 2
WORK=target/qemu/powercut
mkdir -p "$WORK"

boot() { # <disk> <log> <kill after seconds, or empty: run to the end>
    nexus_qemu_machine_args "$KERNEL_ELF" "dsoftbusd.mode=dual-node" "$1"
    : >"$2"
    "$QEMU" "${NEXUS_QEMU_ARGS[@]}" -chardev "file,id=ser0,path=$(nexus_qemu_escape "$2")" \
        -serial chardev:ser0 </dev/null >/dev/null 2>&1 &
    local pid=$!
    if [[ -n $3 ]]; then
        sleep "$3"
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    else
        local i
        for i in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            grep -q "keystored: \(identity\|store\)" "$2" && grep -q "dsoftbusd: \(device identity\|keystored refuses\)" "$2" && break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

cut_during=0 created_before_cut=0
for r in $(seq "$ROUNDS"); do
    disk=$WORK/round$r.disk
    rm -f "$disk"
    nexus_ensure_disk "$disk"
    delay=$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.3f", 0.04 + rand() * 0.36 }')
    boot "$disk" "$WORK/round$r-cut.log" "$delay"
    created=$(sed -n 's/.*keystored: identity created key=\([0-9a-f]*\).*/\1/p' "$WORK/round$r-cut.log" | head -n 1)
    boot "$disk" "$WORK/round$r-after.log" ""
    after=$(grep -ho "keystored: [a-z ]*\(key=[0-9a-f]*\|corrupt[^;]*\)" "$WORK/round$r-after.log" | head -n 1)
    if [[ -n $created ]]; then before="identity $created committed before the kill"; else before="no identity committed yet"; fi
    echo "$TAG: round $r: killed at ${delay} s ($before); restart: ${after:-no keystored line}"
    if grep -q "keystored: store corrupt" "$WORK/round$r-after.log"; then
        echo "$TAG: FAIL: round $r: the store did not survive the kill"
        exit 1
    fi
    if [[ -n $created ]]; then
        created_before_cut=$((created_before_cut + 1))
        grep -q "keystored: identity loaded key=$created" "$WORK/round$r-after.log" ||
            { echo "$TAG: FAIL: round $r: identity $created was reported created but not loaded after the kill"; exit 1; }
    else
        cut_during=$((cut_during + 1))
        grep -q "keystored: identity \(created\|loaded\) key=" "$WORK/round$r-after.log" ||
            { echo "$TAG: FAIL: round $r: no identity after the restart"; exit 1; }
    fi
done
echo "$TAG: PASS ($ROUNDS kills: $cut_during before the identity was committed, $created_before_cut after; every store opened, every committed identity survived)"
