#!/usr/bin/env bash
# Host-side test of scripts/qemu-test.sh: a fake QEMU replays canned UART logs into the
# file QEMU would write, and each case checks the harness's verdict, exit status and
# message. Needs neither real QEMU nor the kernel; takes a few seconds.
#
# The canned logs are built from `qemu-test.sh --list-markers`, so the cases follow the
# marker contract when it grows.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HARNESS=$ROOT/scripts/qemu-test.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nexus-harness-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- the fake QEMU --------------------------------------------------------------
# Records its arguments (one per line) in $FAKE_ARGS_OUT, finds the UART file in
# "-chardev file,...,path=P", then plays $FAKE_SCRIPT: each line is written to the
# UART file, except directives:
#   @sleep S       sleep S seconds
#   @partial TEXT  write TEXT without a newline
#   @exit N        exit with status N (QEMU: 1 = guest success, 3 = guest failure)
#   @hang          never exit (the harness must stop it)
# Reaching the end of the script exits with status 1 (guest success).
cat >"$WORK/fake-qemu" <<'FAKE'
#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$@" >"$FAKE_ARGS_OUT"
uart=""
prev=""
for a in "$@"; do
    if [[ $prev == -chardev && $a == file,* ]]; then
        uart=${a#*path=}
        uart=${uart//,,/,}
    fi
    prev=$a
done
[[ -n $uart ]] || { echo "fake-qemu: no -chardev file,...,path=" >&2; exit 9; }
while IFS= read -r line || [[ -n $line ]]; do
    case $line in
        "@sleep "*) sleep "${line#@sleep }" ;;
        "@partial "*) printf '%s' "${line#@partial }" >>"$uart" ;;
        "@exit "*) exit "${line#@exit }" ;;
        "@hang") exec sleep 600 ;;
        *) printf '%s\n' "$line" >>"$uart" ;;
    esac
done <"$FAKE_SCRIPT"
exit 1
FAKE
chmod +x "$WORK/fake-qemu"
: >"$WORK/dummy-kernel.elf"

mapfile -t MARKERS < <("$HARNESS" --list-markers)
mapfile -t ANYWHERE < <("$HARNESS" --list-required-anywhere)
((${#MARKERS[@]} >= 2)) || { echo "harness-test: expected at least 2 markers from --list-markers" >&2; exit 1; }
LAST=$((${#MARKERS[@]} - 1))

# Canned UART line i for marker i: "[   0.00i000] <marker>", space-padded like the kernel.
uart_line() { printf '[%12.6f] %s\n' "$(awk -v i="$1" 'BEGIN { printf "%.6f", 0.001 * (i + 1) }')" "${MARKERS[$1]}"; }
all_marker_lines() {
    local i m
    for i in "${!MARKERS[@]}"; do uart_line "$i"; done
    for m in "${ANYWHERE[@]}"; do
        # A contained-fault marker is the start of the kernel's kill line.
        [[ $m == "kernel: fault "* ]] && m+=" rip=0x40000010 addr=0xfeb00000 err=0x5; process killed"
        printf '[%12.6f] %s\n' 0.5 "$m"
    done
}

# ---- test runner ----------------------------------------------------------------
PASSED=0 FAILED=0
# run_case NAME EXPECTED_RC SCRIPT_TEXT [VAR=value ...] -- [must-contain ...] [!must-not-contain ...]
run_case() {
    local name=$1 want_rc=$2 script=$3 out rc=0 pat ok=1 why="" start end
    shift 3
    local envs=()
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    (($#)) && shift
    printf '%s\n' "$script" >"$WORK/script"
    start=$(date +%s%N)
    out=$(env -u RUN_UNTIL_MARKER -u KERNEL_ARGS -u NETDEV_OPTS \
        SKIP_BUILD=1 KERNEL_ELF="$WORK/dummy-kernel.elf" QEMU="$WORK/fake-qemu" \
        UART_LOG="$WORK/uart.log" FAKE_SCRIPT="$WORK/script" FAKE_ARGS_OUT="$WORK/args" \
        RUN_TIMEOUT=10s "${envs[@]}" \
        "$HARNESS" 2>&1) || rc=$?
    end=$(date +%s%N)
    if [[ $rc != "$want_rc" ]]; then ok=0 why="exit status $rc, want $want_rc"; fi
    for pat in "$@"; do
        if [[ $pat == !* ]]; then
            if grep -qF -- "${pat#!}" <<<"$out"; then ok=0 why+="; output contains '${pat#!}'"; fi
        elif ! grep -qF -- "$pat" <<<"$out"; then
            ok=0 why+="; output lacks '$pat'"
        fi
    done
    if ((ok)); then
        PASSED=$((PASSED + 1))
        printf 'ok   - %s (%d ms)\n' "$name" $(((end - start) / 1000000))
    else
        FAILED=$((FAILED + 1))
        printf 'FAIL - %s: %s\n' "$name" "${why#; }"
        # shellcheck disable=SC2001 # indent every line of the output
        sed 's/^/       | /' <<<"$out"
    fi
}

# check_args NAME PATTERN... : the fake QEMU's last argument list contains each line.
check_args() {
    local name=$1 pat ok=1 why=""
    shift
    for pat in "$@"; do
        if [[ $pat == !* ]]; then
            if grep -qxF -- "${pat#!}" "$WORK/args"; then ok=0 why+="; has argument '${pat#!}'"; fi
        elif ! grep -qxF -- "$pat" "$WORK/args"; then
            ok=0 why+="; lacks argument '$pat'"
        fi
    done
    if ((ok)); then
        PASSED=$((PASSED + 1))
        printf 'ok   - %s\n' "$name"
    else
        FAILED=$((FAILED + 1))
        printf 'FAIL - %s: %s\n' "$name" "${why#; }"
        sed 's/^/       | /' "$WORK/args"
    fi
}

ALL=$(all_marker_lines)
FIRST=${MARKERS[0]}
SECOND=${MARKERS[1]}

# ---- cases ----------------------------------------------------------------------
run_case "all markers, guest exits with success -> PASS" 0 \
    "$ALL"$'\n@exit 1' -- \
    "qemu-test: PASS (${#MARKERS[@]} markers" "${MARKERS[LAST]}" "guest    0.001000 s"
check_args "QEMU gets the contract machine (microvm, TCG, usernet, virtio-net, isa-debug-exit)" \
    -M microvm -cpu max -m 256M -no-reboot -nographic \
    user,id=n0 virtio-net-device,netdev=n0 isa-debug-exit,iobase=0xf4,iosize=4 \
    -kernel "$WORK/dummy-kernel.elf" -append dsoftbusd.mode=dual-node \
    "file,id=ser0,path=$WORK/uart.log" chardev:ser0 '!-enable-kvm' '!kvm' '!-accel'

run_case "KERNEL_ARGS and NETDEV_OPTS reach QEMU" 0 \
    "$ALL" KERNEL_ARGS="ipc-selftest.crash=1 foo=bar" NETDEV_OPTS=net=10.9.0.0/24 -- "PASS"
check_args "  ... as -append and -netdev user,id=n0,<opts>" \
    "ipc-selftest.crash=1 foo=bar" "user,id=n0,net=10.9.0.0/24"

run_case "boot figure is the guest timestamp of 'init: services started'" 0 \
    "$ALL" -- "boot→'init: services started'"

run_case "RUN_UNTIL_MARKER=1 stops a guest that keeps running after the last marker" 0 \
    "$ALL"$'\n@hang' RUN_UNTIL_MARKER=1 RUN_TIMEOUT=20s -- \
    "stopped QEMU (RUN_UNTIL_MARKER=1)" "qemu-test: PASS"

run_case "markers arrive slowly and a marker line is written in two pieces" 0 \
    "$(uart_line 0)"$'\n@sleep 0.2\n'"@partial [   0.001500] ${SECOND:0:5}"$'\n@sleep 0.2\n'"${SECOND:5}"$'\n'"$(all_marker_lines | tail -n +3)"$'\n@hang' \
    RUN_UNTIL_MARKER=1 -- "qemu-test: PASS"

run_case "a missing marker fails and is named" 1 \
    "$(all_marker_lines | grep -vF -- "$SECOND")"$'\n@exit 1' -- \
    "qemu-test: FAIL: missing marker '$SECOND' after '$FIRST' (line 1)" "last 40 lines of" "!qemu-test: PASS"

run_case "markers out of order fail" 1 \
    "$(uart_line 1)"$'\n'"$(uart_line 0)"$'\n'"$(all_marker_lines | tail -n +3)"$'\n@exit 1' -- \
    "marker out of order: '$SECOND' appears at line 1 but not after '$FIRST' (line 2)" "!qemu-test: PASS"

run_case "forbidden PANIC fails and names the marker and its line" 1 \
    "$(uart_line 0)"$'\n[   0.002000] PANIC in ipc-selftest: boom\n@exit 3' -- \
    "qemu-test: FAIL: forbidden marker 'PANIC' at line 2: [   0.002000] PANIC in ipc-selftest: boom" \
    "missing marker '$SECOND'" "guest reported failure" "!qemu-test: PASS"

run_case "forbidden marker with RUN_UNTIL_MARKER=1 stops a hanging guest early" 1 \
    "$(uart_line 0)"$'\n[   0.002000] PANIC boom\n@hang' RUN_UNTIL_MARKER=1 RUN_TIMEOUT=20s -- \
    "forbidden marker seen; stopped QEMU" "forbidden marker 'PANIC' at line 2" "!timeout"

run_case "forbidden marker after all markers still fails" 1 \
    "$ALL"$'\n[   0.100000] kernel: fault #PF addr=0x0 rip=0x1234\n@exit 1' -- \
    "forbidden marker 'kernel: fault' at line $((LAST + ${#ANYWHERE[@]} + 2))"

run_case "a probe killed by the kernel is proof, not a failure" 0 \
    "$(all_marker_lines)
[   0.900000] kernel: fault general-protection task=probe-extra rip=0x40000010 addr=0x40000010 err=0x0; process killed
@exit 1" -- "qemu-test: PASS" "!forbidden marker"
run_case "a service killed by a fault is forbidden" 1 \
    "$(all_marker_lines)
[   0.900000] kernel: fault page-fault task=netstackd rip=0x40000010 addr=0x0 err=0x4; process killed
@exit 1" -- "forbidden marker 'kernel: fault' at line $((LAST + ${#ANYWHERE[@]} + 2))"
run_case "a kernel-mode fault naming a probe is still forbidden" 1 \
    "$(all_marker_lines)
[   0.900000] kernel: fault page-fault task=probe-kread vec=14 err=0x0 rip=0xffff cr2=0x0
@exit 3" -- "forbidden marker 'kernel: fault' at line $((LAST + ${#ANYWHERE[@]} + 2))"
run_case "lowercase panic and FAIL are forbidden too; every such line is named" 1 \
    "$ALL"$'\n[   0.100000] selftest: FAIL ipc\n[   0.100001] rust panic at x.rs:1\n@exit 1' -- \
    "forbidden marker 'FAIL' at line $((LAST + ${#ANYWHERE[@]} + 2))" "forbidden marker 'panic' at line $((LAST + ${#ANYWHERE[@]} + 3))"

run_case "a PANIC line is reported as PANIC even if it also says panicked" 1 \
    "$(uart_line 0)"$'\n[   0.000001] kernel: cmdline "x.panic=1"\n[   0.002000] PANIC: panicked at a.rs:1:1: boom\n@exit 3' -- \
    "forbidden marker 'panic' at line 2" "forbidden marker 'PANIC' at line 3: [   0.002000] PANIC: panicked at"

run_case "a flood of forbidden lines is summarised" 1 \
    "$(for i in 1 2 3 4 5 6 7; do echo "[   0.00000$i] FAIL $i"; done)"$'\n@exit 3' -- \
    "forbidden marker 'FAIL' at line 5: [   0.000005] FAIL 5" "... and 2 more lines with forbidden markers" \
    "!at line 6:"

run_case "all markers but guest exits with failure status (3) fails" 1 \
    "$ALL"$'\n@exit 3' -- "guest reported failure: isa-debug-exit value 1 (QEMU exit status 3)"

run_case "all markers but QEMU status 0 (reset / triple fault) fails" 1 \
    "$ALL"$'\n@exit 0' -- "QEMU exited with status 0"

run_case "timeout before the markers fails with a clear message" 1 \
    "$(uart_line 0)"$'\n@hang' RUN_TIMEOUT=1s -- \
    "qemu-test: FAIL: timeout: RUN_TIMEOUT=1s elapsed and QEMU was still running" "missing marker '$SECOND'"

run_case "without RUN_UNTIL_MARKER a guest that never exits times out" 1 \
    "$ALL"$'\n@hang' RUN_TIMEOUT=0.5s -- "all markers were seen, but without RUN_UNTIL_MARKER=1"

run_case "empty UART log fails on the first marker" 1 \
    "@exit 1" -- "missing marker '$FIRST' (" "(empty: the guest printed nothing)"

all_marker_lines >"$WORK/uart.log" # a complete log left by an earlier run
run_case "a stale log from an earlier run is not reused" 1 \
    "@exit 1" -- "missing marker '$FIRST'"

run_case "missing QEMU binary: exit 2 with install instructions" 2 \
    "$ALL" QEMU="$WORK/no-such-qemu" -- "apt-get install qemu-system-x86"

run_case "missing kernel image: exit 2" 2 \
    "$ALL" KERNEL_ELF="$WORK/no-such.elf" -- "kernel image not found"

run_case "bad RUN_TIMEOUT: exit 2" 2 \
    "$ALL" RUN_TIMEOUT=soon -- "RUN_TIMEOUT='soon' is not a positive duration"

echo "harness-test: $PASSED passed, $FAILED failed"
((FAILED == 0))
