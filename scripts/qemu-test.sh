#!/usr/bin/env bash
# Nexus QEMU harness: build the image, boot it under QEMU (TCG), and prove from the
# UART log what it did. THIS FILE HOLDS THE MARKER CONTRACT (EXPECTED_MARKERS below).
#
#   RUN_UNTIL_MARKER=1 RUN_TIMEOUT=90s ./scripts/qemu-test.sh
#
# Environment (see docs/testing/index.md):
#   RUN_TIMEOUT       bound on the QEMU run, timeout(1) style: 90s, 2m, 1.5s (default 90s)
#   RUN_UNTIL_MARKER  1: stop QEMU as soon as the last expected marker is seen
#                     (otherwise the guest must end itself through isa-debug-exit)
#   UART_LOG          where the UART goes (default target/qemu/uart.log)
#   KERNEL_ARGS       kernel command line (default dsoftbusd.mode=dual-node)
#   NETDEV_OPTS       extra -netdev user options, e.g. net=10.9.0.0/24
#   QEMU              QEMU binary (default qemu-system-x86_64)
#   KERNEL_ELF        kernel image (default: the cargo release build)
#   SKIP_BUILD        1: do not run cargo build
#   DISK              raw disk image to attach (default: a fresh, empty one per run,
#                     <UART_LOG without .log>.disk); KEEP_DISK=1 reuses it if present
#   ALLOW_FAULT_TASKS space-separated process names whose kill line is expected
#                     in this run (crash-and-restart tests), besides the probes
#
# Exit status: 0 pass; 1 the run broke the contract (missing, out-of-order or
# forbidden marker, bad QEMU status, timeout, failed extra check); 2 setup problem
# (QEMU missing, build failed, bad environment).
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib/nexus.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nexus.sh"

# ---------------------------------------------------------------------------
# The marker contract. Markers are substrings of a UART line's text (the part after
# the "[   0.012345] " timestamp). EXPECTED_MARKERS must all appear, in this order,
# each on a line after the previous one's. Extend the contract by adding a line here
# (and a note in docs/testing/index.md); the harness self-test picks it up.
EXPECTED_MARKERS=(
    "kernel: boot ok"
    "init: services started"
    "net: virtio-net up mac="
    "netstackd: facade up"
    "net: dhcp bound "
    "SELFTEST: icmp ping ok"
    "dsoftbusd: discovery up (udp loopback)"
    "dsoftbusd: discovery peer found device=node-b"
    "dsoftbusd: session connect peer=node-b"
    "dsoftbusd: identity bound peer=node-b"
    "dsoftbusd: auth ok"
    "dsoftbusd: dual-node session ok"
    "dsoftbusd: bulk transfer "
    "dsoftbusd: identity mismatch peer=node-a"
    "dsoftbusd: announce ignored (malformed)"
    "dsoftbusd: announce ignored (oversized)"
    "dsoftbusd: announce refused (key conflict) device=node-b"
    "dsoftbusd: session still ok after hostile input"
    "dsoftbusd: dual-node proof complete"
)
# Required, but in no fixed place relative to the list above (tasks that run
# beside the network bring-up). Each must appear at least once.
REQUIRED_ANYWHERE=(
    "SELFTEST: ipc roundtrip ok"
    "SELFTEST: grants ok"
    "SELFTEST: mmio map ok"
    "kernel: mmio denied (outside window) task=netstackd"
    "kernel: mmio denied (exec attempt) task=netstackd"
    "kernel: mmio denied (no grant) task=probe-mmio"
    "kernel: fault page-fault task=probe-mmio"
    "kernel: fault page-fault task=probe-kread"
    "kernel: fault page-fault task=probe-textwrite"
    "kernel: fault nx-violation task=probe-stackexec"
    "kernel: fault page-fault task=probe-stackguard"
    "probe-quota: map refused past the quota (NO_MEMORY)"
)
# Contained faults the probes provoke on purpose (source/apps/probes): a
# "kernel: fault" line whose text matches this is the proof that the kernel
# killed the probe, not a failure. A fault in any other process, or a kernel
# fault (no "; process killed"), stays forbidden.
EXPECTED_FAULT_RE="^$NEXUS_PROBE_FAULT_RE"
# A crash-and-restart test names the process it crashes on purpose
# (ALLOW_FAULT_TASKS="dsoftbusd"); its kill line is then expected too.
for t in ${ALLOW_FAULT_TASKS-}; do
    [[ $t =~ ^[a-z0-9-]+$ ]] || { echo "qemu-test: bad ALLOW_FAULT_TASKS entry '$t'" >&2; exit 2; }
    EXPECTED_FAULT_RE+="|^kernel: fault [a-z-]+ task=$t .*; process killed\$"
done
# Any occurrence of one of these anywhere in the log fails the run. A line is reported
# under the first entry it contains, so the more telling ones come first.
FORBIDDEN_MARKERS=(
    "PANIC"
    "panic"
    "FAIL"
    "kernel: fault"
    "triple fault"
)
# The summary reports guest time from boot to each of these markers (when expected).
FIGURE_MARKERS=(
    "init: services started"
    "net: dhcp bound "
    "dsoftbusd: dual-node session ok"
)

# Checks beyond ordered presence. Use count_marker and check_fail; each failed check
# fails the run. Runs after the log is complete.
extra_checks() {
    local m
    for m in "${REQUIRED_ANYWHERE[@]}"; do
        (($(count_marker "$m") >= 1)) || check_fail "missing marker '$m' (required anywhere in the log)"
    done
    # Identity binding gates authentication: every "auth ok" follows its own
    # "identity bound", and the impostor (claiming node-a) gets neither.
    local auth bound mismatch
    auth=$(count_marker "dsoftbusd: auth ok")
    bound=$(count_marker "dsoftbusd: identity bound peer=")
    mismatch=$(count_marker "dsoftbusd: identity mismatch peer=")
    ((auth == bound)) ||
        check_fail "count('dsoftbusd: auth ok')=$auth != count('dsoftbusd: identity bound peer=')=$bound"
    ((mismatch >= 1)) || check_fail "no 'dsoftbusd: identity mismatch peer=' line"
}
# ---------------------------------------------------------------------------

TAG=qemu-test
POLL_INTERVAL=0.05   # seconds between reads of the UART log
FORBIDDEN_GRACE_US=300000 # after a forbidden marker, collect this much more log, then stop
TAIL_LINES=40

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "Options: --list-markers (print the expected markers, one per line),"
    echo "         --list-required-anywhere (markers required in any position), --help"
}

case ${1-} in
    "") ;;
    --list-markers)
        printf '%s\n' "${EXPECTED_MARKERS[@]}"
        exit 0
        ;;
    --list-required-anywhere)
        printf '%s\n' "${REQUIRED_ANYWHERE[@]}"
        exit 0
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "$TAG: unknown argument '$1' (try --help)" >&2
        exit 2
        ;;
esac

QEMU_OVERRIDDEN=0
[[ -n ${QEMU-} ]] && QEMU_OVERRIDDEN=1
QEMU=${QEMU:-qemu-system-x86_64}
RUN_TIMEOUT=${RUN_TIMEOUT:-90s}
RUN_UNTIL_MARKER=${RUN_UNTIL_MARKER:-0}
KERNEL_ARGS=${KERNEL_ARGS-dsoftbusd.mode=dual-node}
UART_LOG=$(nexus_abspath "${UART_LOG:-$NEXUS_ROOT/target/qemu/uart.log}")
KERNEL_ELF=$(nexus_abspath "${KERNEL_ELF:-$(nexus_default_kernel_elf)}")
QEMU_STDERR_LOG=${UART_LOG%.log}.qemu-stderr.log
cd "$NEXUS_ROOT"

now_us() {
    if [[ -n ${EPOCHREALTIME-} ]]; then
        printf '%s\n' "${EPOCHREALTIME//[.,]/}"
    else
        date +%s%6N
    fi
}

# timeout(1)-style duration -> microseconds (s, m, h, d suffixes; fractions allowed).
duration_us() {
    local n unit mult
    [[ $1 =~ ^([0-9]+(\.[0-9]+)?|\.[0-9]+)([smhd]?)$ ]] || return 1
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]}
    case $unit in
        "" | s) mult=1 ;;
        m) mult=60 ;;
        h) mult=3600 ;;
        d) mult=86400 ;;
    esac
    awk -v n="$n" -v m="$mult" 'BEGIN { printf "%d\n", n * m * 1000000 }'
}

# Microseconds -> seconds with two decimals.
fmt_s() { printf '%d.%02d' $(($1 / 1000000)) $(($1 % 1000000 / 10000)); }

if ! TIMEOUT_US=$(duration_us "$RUN_TIMEOUT") || ((TIMEOUT_US <= 0)); then
    echo "$TAG: RUN_TIMEOUT='$RUN_TIMEOUT' is not a positive duration like 90s, 2m or 1.5s" >&2
    exit 2
fi

# ---- build, find QEMU and the image ---------------------------------------------
nexus_kernel_ready "$TAG" || exit 2
nexus_ensure_qemu "$TAG" "$QEMU_OVERRIDDEN" || exit 2

# ---- log state ------------------------------------------------------------------
LOG_TEXT=()  # per UART line: the text after the timestamp (the whole line if none)
LOG_TS=()    # per UART line: guest timestamp in seconds, or empty
LOG_RAW=()   # per UART line: the line as printed
LOG_HOST=()  # per UART line: host microseconds since QEMU start when the harness read it
NEXT=0       # index of the next expected marker to find
MATCH_LINE=() # per expected marker: 1-based line number where it was found
FORBIDDEN_HITS=()  # per line with a forbidden marker: "<line number> <marker>"
FORBIDDEN_SEEN_US=0 # host clock when the first one was read
FORBIDDEN_REPORT_MAX=5
READ_US=0    # host clock when the current batch of lines was read
LINES_READ=0 # complete lines consumed from the log
CHECK_FAILURES=()

# shellcheck disable=SC2317 # check_fail and count_marker are for extra_checks
check_fail() { CHECK_FAILURES+=("$*"); }

# Number of UART lines whose text contains $1.
# shellcheck disable=SC2317
count_marker() {
    local t n=0
    for t in "${LOG_TEXT[@]}"; do
        [[ $t == *"$1"* ]] && n=$((n + 1))
    done
    printf '%d\n' "$n"
}

line_regex='^\[ *([0-9]+\.[0-9]+)\] (.*)$'
process_line() {
    local raw=$1 text=$1 ts="" f lineno
    if [[ $raw =~ $line_regex ]]; then
        ts=${BASH_REMATCH[1]} text=${BASH_REMATCH[2]}
    fi
    LOG_RAW+=("$raw") LOG_TEXT+=("$text") LOG_TS+=("$ts") LOG_HOST+=("$((READ_US - START_US))")
    lineno=${#LOG_RAW[@]}
    for f in "${FORBIDDEN_MARKERS[@]}"; do
        [[ $text =~ $EXPECTED_FAULT_RE ]] && break
        if [[ $text == *"$f"* ]]; then
            ((${#FORBIDDEN_HITS[@]})) || FORBIDDEN_SEEN_US=$READ_US
            FORBIDDEN_HITS+=("$lineno $f")
            break
        fi
    done
    if ((NEXT < ${#EXPECTED_MARKERS[@]})) && [[ $text == *"${EXPECTED_MARKERS[NEXT]}"* ]]; then
        MATCH_LINE[NEXT]=$lineno
        NEXT=$((NEXT + 1))
    fi
}

# Consume new lines from the log. $1=1: final pass, take a trailing partial line too.
read_new_lines() {
    local final=$1 l chunk=()
    [[ -f $UART_LOG ]] || return 0
    READ_US=$(now_us)
    mapfile chunk < <(tail -n "+$((LINES_READ + 1))" -- "$UART_LOG")
    for l in "${chunk[@]}"; do
        if [[ $l != *$'\n' && $final != 1 ]]; then
            break # partial line: wait for the rest
        fi
        l=${l%$'\n'}
        l=${l%$'\r'}
        process_line "$l"
        LINES_READ=$((LINES_READ + 1))
    done
}

# ---- boot -----------------------------------------------------------------------
mkdir -p "$(dirname "$UART_LOG")"
rm -f "$UART_LOG" "$QEMU_STDERR_LOG"
: >"$UART_LOG" # a stale log from an earlier run can never be read as this one

DISK=${DISK:-${UART_LOG%.log}.disk}
[[ ${KEEP_DISK:-0} == 1 ]] || rm -f "$DISK"
nexus_ensure_disk "$DISK"
nexus_qemu_machine_args "$KERNEL_ELF" "$KERNEL_ARGS" "$DISK"
QEMU_CMD=("$QEMU" "${NEXUS_QEMU_ARGS[@]}"
    -chardev "file,id=ser0,path=$(nexus_qemu_escape "$UART_LOG")" -serial chardev:ser0)

echo "$TAG: kernel $KERNEL_ELF"
echo "$TAG: kernel args '$KERNEL_ARGS'; RUN_TIMEOUT=$RUN_TIMEOUT RUN_UNTIL_MARKER=$RUN_UNTIL_MARKER"
echo "$TAG: UART log $UART_LOG"

QEMU_PID=""
stop_qemu() {
    [[ -n $QEMU_PID ]] || return 0
    kill -TERM "$QEMU_PID" 2>/dev/null || return 0
    local i
    for i in $(seq 40); do
        kill -0 "$QEMU_PID" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -KILL "$QEMU_PID" 2>/dev/null || true
}
trap 'stop_qemu' EXIT
trap 'stop_qemu; echo "$TAG: interrupted" >&2; exit 130' INT TERM

START_US=$(now_us)
"${QEMU_CMD[@]}" </dev/null >"$QEMU_STDERR_LOG" 2>&1 &
QEMU_PID=$!

STOP_REASON="" # why the harness ended the run: "" (QEMU exited), all-markers, forbidden, timeout
while kill -0 "$QEMU_PID" 2>/dev/null; do
    read_new_lines 0
    now=$(now_us)
    if [[ $RUN_UNTIL_MARKER == 1 ]] && ((NEXT == ${#EXPECTED_MARKERS[@]} && ${#FORBIDDEN_HITS[@]} == 0)); then
        STOP_REASON=all-markers
    elif ((${#FORBIDDEN_HITS[@]} && now - FORBIDDEN_SEEN_US >= FORBIDDEN_GRACE_US)); then
        STOP_REASON=forbidden
    elif ((now - START_US >= TIMEOUT_US)); then
        STOP_REASON=timeout
    fi
    if [[ -n $STOP_REASON ]]; then
        stop_qemu
        break
    fi
    sleep "$POLL_INTERVAL"
done
QEMU_STATUS=0
wait "$QEMU_PID" 2>/dev/null || QEMU_STATUS=$?
QEMU_PID=""
ELAPSED_US=$(($(now_us) - START_US))
read_new_lines 1

# ---- verdict --------------------------------------------------------------------
FAILURES=()   # marker problems first: they name what the guest did not do
N=${#EXPECTED_MARKERS[@]}
STATUS_FAILURE=""
STATUS_TEXT="QEMU status $QEMU_STATUS"

case $STOP_REASON in
    all-markers)
        STATUS_TEXT="QEMU stopped by the harness"
        echo "$TAG: all $N markers seen after $(fmt_s "$ELAPSED_US") s; stopped QEMU (RUN_UNTIL_MARKER=1)"
        ;;
    forbidden)
        STATUS_TEXT="QEMU stopped by the harness"
        echo "$TAG: forbidden marker seen; stopped QEMU"
        ;;
    timeout)
        STATUS_TEXT="QEMU stopped by the harness"
        STATUS_FAILURE="timeout: RUN_TIMEOUT=$RUN_TIMEOUT elapsed and QEMU was still running; stopped it"
        [[ $RUN_UNTIL_MARKER != 1 && $NEXT == "$N" ]] &&
            STATUS_FAILURE+=" (all markers were seen, but without RUN_UNTIL_MARKER=1 the guest must end itself)"
        ;;
    "")
        case $QEMU_STATUS in
            1) echo "$TAG: guest exited with success (isa-debug-exit 0, QEMU status 1) after $(fmt_s "$ELAPSED_US") s" ;;
            3) STATUS_FAILURE="guest reported failure: isa-debug-exit value 1 (QEMU exit status 3)" ;;
            0) STATUS_FAILURE="QEMU exited with status 0: not a guest exit (with -no-reboot this is a reset, e.g. a triple fault)" ;;
            *) STATUS_FAILURE="QEMU exited with status $QEMU_STATUS: neither guest success (1) nor guest failure (3); see $QEMU_STDERR_LOG" ;;
        esac
        ;;
esac

for ((i = 0; i < ${#FORBIDDEN_HITS[@]} && i < FORBIDDEN_REPORT_MAX; i++)); do
    hit_line=${FORBIDDEN_HITS[i]%% *}
    FAILURES+=("forbidden marker '${FORBIDDEN_HITS[i]#* }' at line $hit_line: ${LOG_RAW[hit_line - 1]}")
done
if ((${#FORBIDDEN_HITS[@]} > FORBIDDEN_REPORT_MAX)); then
    FAILURES+=("... and $((${#FORBIDDEN_HITS[@]} - FORBIDDEN_REPORT_MAX)) more lines with forbidden markers")
fi

if ((NEXT < N)); then
    missing=${EXPECTED_MARKERS[NEXT]}
    after="" earlier=0
    if ((NEXT > 0)); then
        after=" after '${EXPECTED_MARKERS[NEXT - 1]}' (line ${MATCH_LINE[NEXT - 1]})"
        for ((i = 0; i < MATCH_LINE[NEXT - 1]; i++)); do
            if [[ ${LOG_TEXT[i]} == *"$missing"* ]]; then
                earlier=$((i + 1))
                break
            fi
        done
    fi
    if ((earlier > 0)); then
        FAILURES+=("marker out of order: '$missing' appears at line $earlier but not$after (contract order: see EXPECTED_MARKERS in scripts/qemu-test.sh)")
    else
        FAILURES+=("missing marker '$missing'$after ($((N - NEXT)) of $N expected markers not seen)")
    fi
fi

extra_checks
for c in "${CHECK_FAILURES[@]}"; do FAILURES+=("check failed: $c"); done
[[ -n $STATUS_FAILURE ]] && FAILURES+=("$STATUS_FAILURE")

if ((${#FAILURES[@]} == 0)); then
    echo "$TAG: markers (guest time since boot | host time when the harness read the line):"
    boot_figure=""
    for ((i = 0; i < N; i++)); do
        l=$((MATCH_LINE[i] - 1))
        ts=${LOG_TS[l]}
        guest=${ts:+$(printf '%10.6f s' "$ts")}
        printf '  [%2d/%d] %-40s guest %13s | host %6s s | line %d\n' \
            $((i + 1)) "$N" "${EXPECTED_MARKERS[i]}" "${guest:-n/a}" "$(fmt_s "${LOG_HOST[l]}")" $((l + 1))
        for f in "${FIGURE_MARKERS[@]}"; do
            if [[ ${EXPECTED_MARKERS[i]} == "$f" && -n $ts ]]; then
                boot_figure+=$(printf ", boot→'%s' %.4f s guest" "$f" "$ts")
            fi
        done
    done
    echo "$TAG: PASS ($N markers$boot_figure)"
    exit 0
fi

echo "$TAG: last $TAIL_LINES lines of $UART_LOG:"
if [[ -s $UART_LOG ]]; then
    tail -n "$TAIL_LINES" -- "$UART_LOG" | sed 's/^/  | /'
else
    echo "  (empty: the guest printed nothing)"
fi
if [[ -s $QEMU_STDERR_LOG ]]; then
    echo "$TAG: QEMU output ($QEMU_STDERR_LOG):"
    tail -n 20 -- "$QEMU_STDERR_LOG" | sed 's/^/  | /'
fi
for f in "${FAILURES[@]}"; do
    echo "$TAG: FAIL: $f"
done
echo "$TAG: FAIL ($NEXT/$N markers matched; $STATUS_TEXT; $(fmt_s "$ELAPSED_US") s; log $UART_LOG)"
exit 1
