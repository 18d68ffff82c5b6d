//! The echo process of the IPC selftest (see nexus-rt).
#![no_std]
#![no_main]

nexus_rt::entry!(ipc_selftest::echo_main);
