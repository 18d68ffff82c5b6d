#!/usr/bin/env bash
# The kernel's own W^X holds against the kernel (vm.rs): every boot logs
# "kernel: W^X checked" from a walk of the live page tables; here the kernel
# attacks itself with kernel.probe= and the MMU must stop each attack:
#   text-write  a write to its own text        -> page fault, err 0x3 (present, write), cr2 in text
#   data-exec   a call into writable data (.data) -> page fault, err 0x11 (present, fetch), rip = cr2
#   stack-overflow  unbounded recursion on the boot stack (the scheduler's) -> a fault
#               in its unmapped guard page (as #DF: pushing the #PF frame faults too),
#               reported as "kernel stack overflow" with the guard's address
# A kernel fault ends the run with failure (harness status 1); an attack that
# goes through prints "probe ...: ... went through/ran" and is a FAIL here.
# Needs the kernel built (SKIP_BUILD=1 is passed through to qemu-test.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TAG=kernel-wx-test
LOG=target/qemu/uart-wx

fail() { echo "$TAG: FAIL: $*"; exit 1; }
boot() { # <probe> -> harness status
    local rc=0
    KERNEL_ARGS="kernel.probe=$1" RUN_TIMEOUT=60s UART_LOG=$LOG-$1.log \
        SKIP_BUILD=${SKIP_BUILD:-1} ./scripts/qemu-test.sh >"$LOG-$1.harness" 2>&1 || rc=$?
    return "$rc"
}
hex() { [[ $1 =~ ^0x[0-9a-f]+$ ]] || fail "not a hex address: '$1'"; printf '%d' "$1"; }

rc=0
boot stack-overflow || rc=$?
log=$LOG-stack-overflow.log
((rc == 1)) || fail "stack-overflow: the run must end in a kernel fault (harness status 1), got $rc"
grep -q "kernel: W^X checked: .*[1-9][0-9]* stack guard pages unmapped" "$log" || fail "stack-overflow: no guard pages checked at boot"
guard=$(sed -n 's/.*probe stack-overflow: .*guard at \(0x[0-9a-f]*\).*/\1/p' "$log" | head -n 1)
[[ -n $guard ]] || fail "stack-overflow: the probe did not run"
grep -q "probe stack-overflow: .*no fault" "$log" && fail "stack-overflow: the recursion never faulted"
over=$(grep -m1 "kernel: kernel stack overflow: the boot stack ran into its guard page at" "$log") ||
    fail "stack-overflow: no 'kernel stack overflow' report: $(grep -m1 'kernel: fault' "$log")"
at=$(grep -oE 'guard page at 0x[0-9a-f]+' <<<"$over" | sed 's/.* //')
(($(hex "$at") >= $(hex "$guard") && $(hex "$at") < $(hex "$guard") + 4096)) ||
    fail "stack-overflow: reported address $at is not in the guard page $guard"
echo "$TAG: stack-overflow stopped by the guard page: $(grep -m1 'kernel: fault' "$log" | sed 's/^\[[^]]*\] //'); ${over#*] }"

for probe in text-write data-exec; do
    rc=0
    boot "$probe" || rc=$?
    log=$LOG-$probe.log
    ((rc == 1)) || fail "$probe: the run must end in a kernel fault (harness status 1), got $rc (see $LOG-$probe.harness)"
    grep -q "kernel: W^X checked: .*none writable and executable" "$log" || fail "$probe: no 'W^X checked' line"
    target=$(sed -n "s/.*kernel: probe $probe at \(0x[0-9a-f]*\).*/\1/p" "$log" | head -n 1)
    [[ -n $target ]] || fail "$probe: the probe did not run"
    grep -q "probe $probe: .*\(went through\|ran\)" "$log" && fail "$probe: the attack went through"
    line=$(grep -m1 "kernel: fault page-fault vec=14" "$log") || fail "$probe: no kernel page fault after the probe"
    err=$(sed -n 's/.* err=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
    cr2=$(sed -n 's/.* cr2=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
    rip=$(sed -n 's/.* rip=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
    case $probe in
    text-write) want_err=0x3 ;;
    data-exec) want_err=0x11 ;;
    esac
    [[ $err == "$want_err" ]] || fail "$probe: fault err=$err, want $want_err (present + write / present + fetch)"
    (($(hex "$cr2") == $(hex "$target"))) || fail "$probe: fault at cr2=$cr2, want the probe's target $target"
    if [[ $probe == data-exec ]]; then
        (($(hex "$rip") == $(hex "$target"))) || fail "$probe: fault rip=$rip, want the fetch at $target"
    fi
    echo "$TAG: $probe stopped by the MMU: ${line#*] }"
done
echo "$TAG: PASS (text-write and data-exec fault in ring 0: the kernel's tables are W^X; a boot-stack overflow hits its guard page)"
