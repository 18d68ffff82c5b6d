#!/usr/bin/env bash
# Run every Nexus benchmark and print one table:
#   metric | value | baseline | ratio | target | met?
#
#   ./scripts/bench.sh            # criterion benches (≈1–2 min) + QEMU figures
#   ./scripts/bench.sh --quick    # criterion --quick (fewer samples, noisier)
#   ./scripts/bench.sh --no-qemu  # no QEMU marker run
#   ./scripts/bench.sh --qemu-log target/qemu/uart.log   # QEMU figures from an existing log
#   ./scripts/bench.sh --no-netns # skip the 8-node Linux namespace test (runs by default as root, ~15 s)
#   ./scripts/bench.sh --send     # also scripts/bench-send.sh: `dsoftbus send` of 256 MiB between two
#                                 # daemons on loopback vs plain TCP + SHA-256 + fsync (~1 min, 3 GiB of disk writes)
#
# Each bench measures its baseline in the same run (see userspace/dsoftbus/benches/)
# and prints `bench-row|...` lines; this script only collects them. Nothing here
# fails on a missed target: performance is reported as ratios, never asserted.
# The full output of each run is kept in target/bench/.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

QUICK=0
QEMU=1
QEMU_LOG=""
NETNS=0
SEND=0
[[ $(id -u) == 0 ]] && NETNS=1
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --no-qemu) QEMU=0 ;;
        --qemu-log) QEMU_LOG=$2; shift ;;
        --no-netns) NETNS=0 ;;
        --send) SEND=1 ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
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

for b in handshake crypto session discovery gate; do
    echo "bench: $b ..." >&2
    feats=()
    [[ $b == crypto ]] && feats=(--features bench-crypto) # the other backends it compares
    if ! cargo bench -p dsoftbus --bench "$b" "${feats[@]}" -- "${CRIT_ARGS[@]}" >"$OUT/$b.log" 2>&1; then
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
        met=$(awk -v t="$t_dual" 'BEGIN { print (t <= 0.5) ? "yes" : "NO" }')
        echo "bench-row|QEMU (TCG): boot -> dual-node session ok|${t_dual} s guest|—|—|<= 0.5 s|$met"
    fi
    [[ -n $t_dhcp ]] && echo "bench-row|QEMU (TCG): boot -> DHCP bound|${t_dhcp} s guest|—|—|report|n/a"
    [[ -n $ping_rtt ]] && echo "bench-row|QEMU (TCG): ICMP ping RTT to gateway|${ping_rtt} µs guest|—|—|report|n/a"
    [[ -n $sess_rtt ]] && echo "bench-row|QEMU (TCG): dual-node session ping RTT|${sess_rtt} µs guest|—|—|report|n/a"
    local bulk
    bulk=$(grep -m1 'dsoftbusd: bulk transfer' "$log" | sed -n 's/.*bulk transfer \([0-9]*\) bytes.* in \([0-9]*\) us (\([0-9]*\) KB\/s.*/\1 bytes in \2 µs: \3 KB\/s/p')
    # Same boot: the plain facade TCP baseline and the ratio (dsoftbusd: figures bulk ...).
    local bfig plain bratio dm dmratio
    bfig=$(grep -m1 'dsoftbusd: figures bulk transfer=' "$log" || true)
    plain=$(sed -n 's/.* plain-tcp=\([0-9]*\) .*/\1/p' <<<"$bfig")
    bratio=$(sed -n 's/.* ratio=\([0-9.]*\) .*/\1/p' <<<"$bfig")
    dm=$(sed -n 's/.* data-messages=\([0-9]*\) .*/\1/p' <<<"$bfig")
    dmratio=$(sed -n 's/.* data-messages-ratio=\([0-9.]*\) .*/\1/p' <<<"$bfig")
    if [[ -n $bulk && -n $plain && -n $bratio ]]; then
        echo "bench-row|QEMU (TCG): dual-node 1 MiB file transfer on a stream (dsoftbus::transfer, SHA-256) over the guest stack|${bulk} guest|${plain} KB/s plain facade TCP, same boot|${bratio}x|report|n/a"
        [[ -n $dm && -n $dmratio ]] &&
            echo "bench-row|QEMU (TCG): the same file in session data messages (carrier to a peer without streams/1)|${dm} KB/s guest|${plain} KB/s plain facade TCP, same boot|${dmratio}x|report|n/a"
    elif [[ -n $bulk ]]; then
        echo "bench-row|QEMU (TCG): dual-node bulk transfer over the guest stack|${bulk} guest|—|—|report|n/a"
    fi
    # Process-model figures (ipc-selftest, same boot): the best batch of each.
    local fig null yld ipc
    fig=$(grep -m1 'ipc-selftest: figures' "$log" || true)
    null=$(sed -n 's/.*null-syscall=\([0-9]*\)ns.*/\1/p' <<<"$fig")
    yld=$(sed -n 's/.* yield=\([0-9]*\)ns.*/\1/p' <<<"$fig")
    ipc=$(sed -n 's/.*ipc-roundtrip-best=\([0-9]*\)ns.*/\1/p' <<<"$fig")
    [[ -n $null ]] && echo "bench-row|QEMU (TCG): null syscall (now), ring 3 -> 0 -> 3|${null} ns guest|—|—|report|n/a"
    [[ -n $yld ]] && echo "bench-row|QEMU (TCG): yield (into the scheduler and back)|${yld} ns guest|—|—|report|n/a"
    [[ -n $ipc ]] && echo "bench-row|QEMU (TCG): IPC round trip between two processes (2 switches, 6 syscalls)|${ipc} ns guest|—|—|report|n/a"
    local hs inproc held
    hs=$(grep -m1 'dsoftbusd: figures handshake' "$log" || true)
    inproc=$(sed -n 's/.*in-process=\([0-9]*\)us.*/\1/p' <<<"$hs")
    held=$(sed -n 's/.*node-a-key-in-keystored=\([0-9]*\)us.*/\1/p' <<<"$hs")
    if [[ -n $inproc && -n $held ]]; then
        local ratio
        ratio=$(awk -v a="$held" -v b="$inproc" 'BEGIN { printf "%.2fx", a / b }')
        echo "bench-row|QEMU (TCG): XK handshake, static DH through keystored (IPC)|${held} µs guest|${inproc} µs guest, all in-process (paired, same boot)|${ratio}|report|n/a"
    fi
    return 0
}

# Linux-node figures from scripts/tests/netns-test.sh (8 nodes in namespaces).
netns_rows() {
    local log=$1 mesh send tcp
    mesh=$(grep -m1 '\[1\] .* discovered each other' "$log" | sed -n 's/.*: \([0-9]*\) ms from start.*/\1/p')
    [[ -n $mesh ]] && echo "bench-row|Linux nodes: 8 namespaces all see each other (full mesh of sessions)|${mesh} ms|—|—|report|n/a"
    send=$(grep -m1 'dsoftbus send (' "$log" | sed -n 's/.*, \([0-9.]*\) MB\/s.*/\1/p')
    tcp=$(grep -m1 'plain TCP (no crypto' "$log" | sed -n 's/.*, \([0-9.]*\) MB\/s.*/\1/p')
    if [[ -n $send && -n $tcp ]]; then
        local ratio
        ratio=$(awk -v a="$send" -v b="$tcp" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "—" }')
        echo "bench-row|Linux nodes: file send between namespaces (session, SHA-256, fsync)|${send} MB/s|${tcp} MB/s plain TCP|${ratio}|report|n/a"
    fi
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

if ((NETNS)); then
    echo "bench: netns test (8 Linux nodes) ..." >&2
    if scripts/tests/netns-test.sh >"$OUT/netns.log" 2>&1; then
        netns_rows "$OUT/netns.log" >>"$ROWS"
    else
        echo "bench: netns test failed (see $OUT/netns.log); no Linux-node rows" >&2
    fi
fi

if ((SEND)); then
    echo "bench: dsoftbus send vs plain TCP (scripts/bench-send.sh) ..." >&2
    if scripts/bench-send.sh >"$OUT/send.log" 2>&1; then
        grep '^bench-row|' "$OUT/send.log" >>"$ROWS"
    else
        echo "bench: bench-send failed (see $OUT/send.log); no send rows" >&2
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
