#!/usr/bin/env bash
# Run every Nexus benchmark and print one table:
#   metric | value | baseline | ratio | target | met?
#
#   ./scripts/bench.sh            # criterion benches (≈1–2 min) + QEMU figures
#   ./scripts/bench.sh --quick    # criterion --quick (fewer samples, noisier)
#   ./scripts/bench.sh --no-qemu  # host benches only
#   ./scripts/bench.sh --qemu-log target/qemu/uart.log   # QEMU figures from an existing log
#
# Each bench measures its baseline in the same run (see userspace/dsoftbus/benches/)
# and prints `bench-row|...` lines; this script only collects them. Nothing here
# fails on a missed target: performance is reported as ratios, never asserted.
# The full output of each run is kept in target/bench/.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=0
QEMU=1
QEMU_LOG=""
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --no-qemu) QEMU=0 ;;
        --qemu-log) QEMU_LOG=$2; shift ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

OUT=target/bench
mkdir -p "$OUT"
ROWS=$OUT/rows.txt
: >"$ROWS"

CRIT_ARGS=()
((QUICK)) && CRIT_ARGS+=(--quick)

for b in handshake session discovery gate; do
    echo "bench: $b ..." >&2
    if ! cargo bench -p dsoftbus --bench "$b" -- "${CRIT_ARGS[@]}" >"$OUT/$b.log" 2>&1; then
        echo "bench: $b failed (see $OUT/$b.log)" >&2
        tail -20 "$OUT/$b.log" >&2
        continue
    fi
    grep '^bench-row|' "$OUT/$b.log" >>"$ROWS"
done

# QEMU figures: guest timestamps from the UART log of a marker run.
qemu_rows() {
    local log=$1 t_dual t_dhcp ping_rtt sess_rtt
    t_dual=$(grep -m1 'dsoftbusd: dual-node session ok' "$log" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
    t_dhcp=$(grep -m1 'net: dhcp bound ' "$log" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
    ping_rtt=$(grep -m1 'icmp ping ok' "$log" | sed -n 's/.*rtt=\([0-9]*\)us.*/\1/p')
    sess_rtt=$(grep -m1 'dsoftbusd: dual-node session ok' "$log" | sed -n 's/.*rtt=\([0-9]*\)us.*/\1/p')
    if [[ -n $t_dual ]]; then
        local met
        met=$(awk -v t="$t_dual" 'BEGIN { print (t <= 1.5) ? "yes" : "NO" }')
        echo "bench-row|QEMU (TCG): boot -> dual-node session ok|${t_dual} s guest|—|—|<= 1.5 s|$met"
    fi
    [[ -n $t_dhcp ]] && echo "bench-row|QEMU (TCG): boot -> DHCP bound|${t_dhcp} s guest|—|—|report|n/a"
    [[ -n $ping_rtt ]] && echo "bench-row|QEMU (TCG): ICMP ping RTT to gateway|${ping_rtt} µs guest|—|—|report|n/a"
    [[ -n $sess_rtt ]] && echo "bench-row|QEMU (TCG): dual-node session ping RTT|${sess_rtt} µs guest|—|—|report|n/a"
    return 0
}

if [[ -n $QEMU_LOG ]]; then
    qemu_rows "$QEMU_LOG" >>"$ROWS"
elif ((QEMU)); then
    if command -v qemu-system-x86_64 >/dev/null 2>&1 && [[ -x scripts/qemu-test.sh ]]; then
        echo "bench: QEMU marker run ..." >&2
        if env RUN_UNTIL_MARKER=1 RUN_TIMEOUT=90s UART_LOG=$OUT/uart.log ./scripts/qemu-test.sh >"$OUT/qemu.log" 2>&1; then
            qemu_rows "$OUT/uart.log" >>"$ROWS"
        else
            echo "bench: QEMU run failed (see $OUT/qemu.log); no QEMU rows" >&2
        fi
    else
        echo "bench: no qemu-system-x86_64; no QEMU rows" >&2
    fi
fi

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo
echo "Nexus benchmarks — $(date -u +%Y-%m-%d) — ${CPU:-unknown CPU}, $(nproc) cores$( ((QUICK)) && echo ', criterion --quick')"
echo
echo "| metric | value | baseline | ratio | target | met? |"
echo "| --- | --- | --- | --- | --- | --- |"
while IFS='|' read -r _ metric value baseline ratio target met; do
    echo "| $metric | $value | $baseline | $ratio | $target | $met |"
done <"$ROWS"
