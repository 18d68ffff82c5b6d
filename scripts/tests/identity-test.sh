#!/usr/bin/env bash
# The device identity survives reboots and bad storage is loud (issue 14):
#   1. a fresh disk: keystored creates the identity; the contract passes;
#   2. the same disk again: the same fingerprint is loaded; the contract passes;
#   3. the store's headers overwritten with random bytes: keystored refuses
#      ("store corrupt; refusing"), dsoftbusd starts no session, the run fails;
#   4. the same damaged disk with keystored.reset=1: a new identity is created
#      (logged as a reset) and the contract passes.
# Needs the kernel built (SKIP_BUILD=1 is passed through to qemu-test.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TAG=identity-test
DISK=target/qemu/identity-test.disk
LOG=target/qemu/uart-identity
rm -f "$DISK"

fail() { echo "$TAG: FAIL: $*"; exit 1; }
boot() { # <n> <extra kernel args> -> harness status
    local rc=0
    DISK=$DISK KEEP_DISK=1 KERNEL_ARGS="dsoftbusd.mode=dual-node${2:+ $2}" RUN_UNTIL_MARKER=1 \
        RUN_TIMEOUT=90s UART_LOG=$LOG-$1.log SKIP_BUILD=${SKIP_BUILD:-1} ./scripts/qemu-test.sh \
        >"$LOG-$1.harness" 2>&1 || rc=$?
    echo "$TAG: boot $1 (${2:-no extra args}): harness status $rc; $(grep -h 'keystored:' "$LOG-$1.log" | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ' ')"
    return "$rc"
}
key_of() { sed -n 's/.*keystored: identity \(created\|loaded\) key=\([0-9a-f]*\).*/\2/p' "$LOG-$1.log" | head -n 1; }

boot 1 || fail "first boot on a fresh disk broke the contract (see $LOG-1.harness)"
grep -q "keystored: identity created key=" "$LOG-1.log" || fail "first boot did not create an identity"
k1=$(key_of 1)

boot 2 || fail "second boot on the same disk broke the contract (see $LOG-2.harness)"
grep -q "keystored: identity loaded key=$k1" "$LOG-2.log" ||
    fail "second boot did not load the same identity (want key=$k1)"

# Damage the store's header sectors (0-3) with random bytes.
dd if=/dev/urandom of="$DISK" bs=512 count=4 conv=notrunc status=none
rc=0
boot 3 || rc=$?
((rc == 1)) || fail "a corrupt store must fail the run (harness status 1), got $rc"
grep -q "keystored: store corrupt (.*); refusing" "$LOG-3.log" || fail "no 'store corrupt; refusing' line"
if grep -q "dsoftbusd: dual-node session ok" "$LOG-3.log"; then
    fail "a session came up although the store was corrupt"
fi
if grep -q "keystored: identity created" "$LOG-3.log"; then
    fail "a new identity was created silently on a corrupt store"
fi

boot 4 keystored.reset=1 || fail "keystored.reset=1 did not recover (see $LOG-4.harness)"
grep -q "keystored.reset=1: re-creating the identity" "$LOG-4.log" || fail "the reset was not logged"
k4=$(key_of 4)
[[ -n $k4 && $k4 != "$k1" ]] || fail "reset did not create a new identity ($k1 -> $k4)"
echo "$TAG: PASS (created $k1, loaded $k1 after reboot, corrupt store refused, reset created $k4)"
