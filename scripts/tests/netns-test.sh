#!/usr/bin/env bash
# Multi-node test of the Linux soft-bus node (`dsoftbus`, userspace/dsoftbus-cli)
# in network namespaces: 8 nodes on one bridge (10.77.0.0/24) must
#   1. discover each other and hold 7 sessions each; every pair pings;
#   2. refuse an impostor namespace claiming node-3's id (`identity mismatch`);
#   3. stay responsive through a garbage flood at the discovery port;
#   4. re-discover and re-session a node killed and restarted;
#   5. move a 256 MiB file with `dsoftbus send` (hash checked), reported next to
#      plain TCP between the same two namespaces.
# Numbers are reported, never asserted. Needs root (namespaces, veth, bridge);
# without root it says so and exits 0. Cleans up on every exit (trap).
#
#   sudo scripts/tests/netns-test.sh            # KEEP=1 keeps the work dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib/nexus.sh
source "$ROOT/scripts/lib/nexus.sh"
TAG=netns-test
NODES=8
SEND_MIB=${SEND_MIB:-256}

if [[ $(id -u) != 0 ]]; then
    echo "$TAG: SKIP: needs root to create network namespaces (CI runs as root; try: sudo $0)"
    exit 0
fi
for tool in ip sha256sum timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$TAG: '$tool' missing (Debian: apt-get install iproute2 coreutils)" >&2; exit 2; }
done

PFX="nxb$$"   # unique per run: namespace names ${PFX}-hub, ${PFX}-n1..
HUB="$PFX-hub"
WORK=$(mktemp -d /tmp/dsoftbus-netns.XXXXXX)
declare -A PID=()
FAILED=1
T0=$SECONDS

ns() { echo "$PFX-n$1"; }
addr() { echo "10.77.0.$((10 + $1))"; }

cleanup() {
    local rc=$?
    nexus_ns_test_cleanup 15
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "$TAG: FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }

nexus_build_dsoftbus "$TAG" --example netns_tool
TOOL=${BIN%/*}/examples/netns_tool

# --- topology: one bridge in the hub namespace, one veth per node ---------------
nexus_ns_hub_bridge "$HUB"
attach() { # $1 index
    local n; n=$(ns "$1")
    ip netns add "$n"
    ip -n "$HUB" link add "v$1" type veth peer name eth0 netns "$n"
    ip -n "$HUB" link set "v$1" master br0 up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$(addr "$1")/24" brd + dev eth0
    ip -n "$n" link set eth0 up
}
for i in $(seq 1 $((NODES + 2))); do attach "$i"; done   # +1 impostor, +1 flooder
echo "$TAG: $NODES node namespaces + impostor + flooder on bridge br0 (10.77.0.0/24)"

cli() { # $1 node index (state dir), rest: command
    local i=$1; shift
    "$BIN" --state-dir "$WORK/n$i" "$@"
}
start_node() { # $1 index, $2 device id, rest: extra args
    local i=$1 id=$2; shift 2
    ip netns exec "$(ns "$i")" "$BIN" --state-dir "$WORK/n$i" daemon --device-id "$id" \
        --inbox "$WORK/n$i/inbox" --accept any "$@" >>"$WORK/n$i.log" 2>&1 &
    PID[$i]=$!
}
sessions() { cli "$1" status 2>/dev/null | sed -n 's/^sessions=//p'; }
alive() { kill -0 "${PID[$1]}" 2>/dev/null || fail "node $1 (pid ${PID[$1]}) died; see $WORK/n$1.log"; }
# Wait (bounded) until every node 1..NODES holds NODES-1 sessions; prints ms.
wait_mesh() { # $1 start ms, $2 timeout s
    local start=$1 deadline=$((SECONDS + $2)) ok i
    while ((SECONDS < deadline)); do
        ok=1
        for i in $(seq 1 $NODES); do
            [[ $(sessions "$i") == $((NODES - 1)) ]] || { ok=0; break; }
        done
        if ((ok)); then echo $(($(now_ms) - start)); return 0; fi
        sleep 0.05
    done
    for i in $(seq 1 $NODES); do echo "$TAG:   node-$i sessions=$(sessions "$i")"; done
    return 1
}
ping_all() { # every ordered pair, one ping each
    local i j n=0 out
    for i in $(seq 1 $NODES); do
        for j in $(seq 1 $NODES); do
            ((i == j)) && continue
            out=$(cli "$i" ping "node-$j" -c 1 -W 3) || fail "node-$i could not ping node-$j: $out"
            n=$((n + 1))
        done
    done
    echo "$n"
}

# --- 1. discovery and full mesh ----------------------------------------------------
start=$(now_ms)
for i in $(seq 1 $NODES); do start_node "$i" "node-$i"; done
mesh_ms=$(wait_mesh "$start" 30) || fail "the $NODES nodes did not reach a full mesh within 30 s"
echo "$TAG: [1] $NODES nodes discovered each other and hold $((NODES - 1)) sessions each: ${mesh_ms} ms from start"
cli 1 peers | sed 's/^/      /'
pairs=$(ping_all)
echo "$TAG: [1] every pair pings over its session ($pairs pings ok); e.g. $(cli 1 ping node-8 -c 3 -i 0.1 | tail -n 1)"

# --- 2. impostor claiming node-3 ------------------------------------------------------
IMP=$((NODES + 1))
start_node "$IMP" "node-3"
deadline=$((SECONDS + 20))
want=$((NODES - 3))   # node-4..node-8: the impostor's id is smaller, so it dials them
while ((SECONDS < deadline)); do
    got=0
    for i in $(seq 4 $NODES); do grep -q "identity mismatch peer=node-3" "$WORK/n$i.log" && got=$((got + 1)); done
    ((got == want)) && break
    sleep 0.2
done
((got == want)) || fail "only $got of $want nodes logged 'identity mismatch peer=node-3'"
conflicts=$(grep -l "announce refused (key conflict) peer=node-3" "$WORK"/n[1-8].log | wc -l)
((conflicts == NODES - 1)) || fail "$conflicts of $((NODES - 1)) nodes refused the impostor's announce"
real=$(cli 3 status | sed -n 's/^fingerprint=//p')
for i in $(seq 1 $NODES); do
    ((i == 3)) && continue
    line=$(cli "$i" peers | awk '$1 == "node-3"')
    # PINNED is auto (first sight) or user; SESSION yes.
    [[ $line == *"$real"*@(auto|user|yes)*yes* ]] || fail "node-$i no longer shows the real node-3 with a session: $line"
done
imp_sessions=$(cli "$IMP" status | sed -n 's/^sessions=//p')
((imp_sessions == 0)) || fail "the impostor holds $imp_sessions sessions"
grep -h "identity mismatch peer=node-3" "$WORK/n4.log" | head -n 1 | sed 's/^/      /'
echo "$TAG: [2] impostor claiming node-3 refused: 'identity mismatch peer=node-3' on $got/$want nodes it dialled, its announce refused (key conflict) on $conflicts/$((NODES - 1)); the real node-3 kept all sessions"
kill "${PID[$IMP]}"; wait "${PID[$IMP]}" 2>/dev/null || true; unset "PID[$IMP]"

# --- 3. garbage flood at the discovery port ---------------------------------------------
FLOOD=$((NODES + 2))
targets=("10.77.0.255:37020")
for i in $(seq 1 $NODES); do targets+=("$(addr "$i"):37020"); done
ip netns exec "$(ns $FLOOD)" "$TOOL" flood 300000 "${targets[@]}" >"$WORK/flood.out" &
fpid=$!
sleep 0.3
during=$(cli 1 ping node-2 -c 5 -i 0.1 -W 3 | tail -n 1) || fail "node-1 could not ping node-2 during the flood"
wait "$fpid" || fail "flood tool failed"
for i in $(seq 1 $NODES); do alive "$i"; done
mesh_after=$(wait_mesh "$(now_ms)" 15) || fail "the mesh did not hold after the flood"
pairs=$(ping_all)
c1=$(cli 1 status)
malformed=$(sed -n 's/^counter.malformed=//p' <<<"$c1")
oversized=$(sed -n 's/^counter.oversized=//p' <<<"$c1")
peers1=$(sed -n 's/^peers=//p' <<<"$c1")
echo "$TAG: [3] $(cat "$WORK/flood.out"); during it: $during"
echo "$TAG: [3] after it all $NODES nodes alive, full mesh (${mesh_after} ms to confirm), $pairs pings ok; node-1 counted malformed=$malformed oversized=$oversized, table holds $peers1 peers"

# --- 4. restart of a node -----------------------------------------------------------
kill -9 "${PID[5]}"; wait "${PID[5]}" 2>/dev/null || true
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    gone=1
    for i in 1 2 3 4 6 7 8; do [[ $(sessions "$i") == $((NODES - 2)) ]] || gone=0; done
    ((gone)) && break
    sleep 0.05
done
((gone)) || fail "peers did not notice node-5's death within 30 s"
start=$(now_ms)
start_node 5 node-5
back_ms=$(wait_mesh "$start" 30) || fail "node-5 was not re-sessioned within 30 s of its restart"
grep -q "auth ok peer=node-5" "$WORK/n1.log" || fail "node-1 never logged a session with node-5"
out=$(cli 5 ping node-1 -c 1) || fail "restarted node-5 cannot ping node-1: $out"
echo "$TAG: [4] node-5 killed (SIGKILL): peers dropped its sessions; restarted with the same key: full mesh again after ${back_ms} ms"

# --- 5. 256 MiB transfer vs plain TCP ---------------------------------------------------
SRC="$WORK/payload.bin"
head -c $((SEND_MIB << 20)) /dev/urandom >"$SRC"
want_sha=$(sha256sum "$SRC" | cut -d' ' -f1)
send_out=$(cli 1 send node-2 "$SRC" --no-progress) || fail "dsoftbus send failed: $send_out"
got_sha=$(sha256sum "$WORK/n2/inbox/payload.bin" | cut -d' ' -f1)
[[ $got_sha == "$want_sha" ]] || fail "received file hash $got_sha != sent $want_sha"
rm -f "$WORK/n2/inbox/payload.bin"
ip netns exec "$(ns 2)" "$TOOL" tcp-recv "$(addr 2):5001" "$WORK/tcp.out" &
rpid=$!
sleep 0.3
tcp_out=$(ip netns exec "$(ns 1)" "$TOOL" tcp-send "$(addr 2):5001" "$SRC") || fail "plain TCP transfer failed"
wait "$rpid"
[[ $(sha256sum "$WORK/tcp.out" | cut -d' ' -f1) == "$want_sha" ]] || fail "plain TCP copy differs"
rm -f "$WORK/tcp.out" "$SRC"
echo "$TAG: [5] ${SEND_MIB} MiB node-1 -> node-2, hash matches (sha256 ${want_sha:0:16}...):"
echo "$TAG:       dsoftbus send (Noise session, SHA-256, fsync): $(sed -n 's/.*bytes in \(.*\) s (\(.*\) MB\/s).*/\1 s, \2 MB\/s/p' <<<"$send_out")"
echo "$TAG:       plain TCP (no crypto, no hash, fsync):         $(sed -n 's/.*bytes in \(.*\) s (\(.*\) MB\/s).*/\1 s, \2 MB\/s/p' <<<"$tcp_out")"

for i in $(seq 1 $NODES); do alive "$i"; done
FAILED=0
echo "$TAG: PASS (5 checks, $((SECONDS - T0)) s)"
