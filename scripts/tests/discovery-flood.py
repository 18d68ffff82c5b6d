#!/usr/bin/env python3
"""Send hostile datagrams at a discovery port (used by flood-test.sh).

A mix, in rotation: random junk of random length, announce-shaped junk
(right magic, broken body), oversized datagrams (longer than any valid v1
announce), and *valid* v1 announces for random device ids with random keys
(a fake-id flood that peer tables must absorb within their bounds).
Only ever sends to the address given (loopback, forwarded into the guest).
"""
import argparse
import os
import random
import socket
import struct
import sys
import time

MAX_ANNOUNCE_LEN = 4 + 1 + 1 + 64 + 2 + 32 + 1 + 16 * (1 + 64)


def valid_announce(rng: random.Random) -> bytes:
    dev = ("spoof-%08x" % rng.getrandbits(32)).encode()
    key = os.urandom(32)
    return b"NXSB" + bytes([1, len(dev)]) + dev + struct.pack(">H", 40000) + key + bytes([0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds")
    ap.add_argument("--rate", type=int, default=2000, help="datagrams per second")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        print("discovery-flood: refusing to send anywhere but loopback", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kinds = ["junk", "shaped", "oversized", "announce"]
    sent = {k: 0 for k in kinds}
    start = time.monotonic()
    interval = 1.0 / max(args.rate, 1)
    i = 0
    while time.monotonic() - start < args.duration:
        kind = kinds[i % len(kinds)]
        if kind == "junk":
            data = os.urandom(rng.randint(1, 1400))
        elif kind == "shaped":
            data = b"NXSB\x01" + os.urandom(rng.randint(0, 60))
        elif kind == "oversized":
            data = os.urandom(MAX_ANNOUNCE_LEN + 1 + rng.randint(0, 200))
        else:
            data = valid_announce(rng)
        try:
            sock.sendto(data, (args.host, args.port))
            sent[kind] += 1
        except OSError:
            pass
        i += 1
        next_at = start + i * interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    total = sum(sent.values())
    print("discovery-flood: sent %d datagrams in %.1f s (%s)" % (
        total, time.monotonic() - start, ", ".join("%s=%d" % kv for kv in sent.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
