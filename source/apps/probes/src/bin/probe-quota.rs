//! `probe-quota` (see the crate docs).
#![no_std]
#![no_main]

nexus_rt::entry!(probes::quota);
