#!/usr/bin/env bash
# Boot Nexus interactively: the UART is this terminal (and is copied to UART_LOG).
# Quit with Ctrl-A X (or Ctrl-C). Same machine as scripts/qemu-test.sh.
#
#   ./scripts/qemu-run.sh                          # default kernel args
#   ./scripts/qemu-run.sh ipc-selftest.crash=1     # extra kernel args (appended)
#   KERNEL_ARGS="dsoftbusd.mode=dual-node" ./scripts/qemu-run.sh
#
# Environment: KERNEL_ARGS (default dsoftbusd.mode=dual-node), NETDEV_OPTS, QEMU,
# KERNEL_ELF, SKIP_BUILD=1, UART_LOG (default target/qemu/run-uart.log),
# DISK (default target/qemu/run-disk.img: kept between runs, so the device's
# identity survives reboots; FRESH_DISK=1 starts from an empty disk).
set -euo pipefail

# shellcheck source=scripts/lib/nexus.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nexus.sh"

TAG=qemu-run
case ${1-} in
    -h | --help)
        sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

QEMU_OVERRIDDEN=0
[[ -n ${QEMU-} ]] && QEMU_OVERRIDDEN=1
QEMU=${QEMU:-qemu-system-x86_64}
KERNEL_ARGS=${KERNEL_ARGS-dsoftbusd.mode=dual-node}
if (($#)); then KERNEL_ARGS="${KERNEL_ARGS:+$KERNEL_ARGS }$*"; fi
UART_LOG=$(nexus_abspath "${UART_LOG:-$NEXUS_ROOT/target/qemu/run-uart.log}")
KERNEL_ELF=$(nexus_abspath "${KERNEL_ELF:-$(nexus_default_kernel_elf)}")
cd "$NEXUS_ROOT"

nexus_kernel_ready "$TAG" || exit 2
nexus_ensure_qemu "$TAG" "$QEMU_OVERRIDDEN" || exit 2
mkdir -p "$(dirname "$UART_LOG")"

DISK=$(nexus_abspath "${DISK:-$NEXUS_ROOT/target/qemu/run-disk.img}")
if [[ ${FRESH_DISK:-0} == 1 ]]; then
    rm -f "$DISK"
    echo "$TAG: FRESH_DISK=1: starting from an empty disk"
fi
nexus_ensure_disk "$DISK"
nexus_qemu_machine_args "$KERNEL_ELF" "$KERNEL_ARGS" "$DISK"
echo "$TAG: disk $DISK"
echo "$TAG: booting $KERNEL_ELF with '$KERNEL_ARGS' (quit: Ctrl-A X; UART copy: $UART_LOG)"
status=0
"$QEMU" "${NEXUS_QEMU_ARGS[@]}" \
    -chardev "stdio,id=ser0,mux=on,logfile=$(nexus_qemu_escape "$UART_LOG")" \
    -serial chardev:ser0 || status=$?
case $status in
    1) echo "$TAG: guest exited with success" ;;
    3) echo "$TAG: guest reported failure (QEMU status 3)"; exit 1 ;;
    0) echo "$TAG: QEMU ended (quit, or the guest reset: with -no-reboot a triple fault ends QEMU too)" ;;
    *) echo "$TAG: QEMU exited with status $status"; exit "$status" ;;
esac
