//! `probe-stackexec` (see the crate docs).
#![no_std]
#![no_main]

nexus_rt::entry!(probes::stackexec);
