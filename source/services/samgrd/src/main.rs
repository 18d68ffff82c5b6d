//! The process image (see nexus-rt).
#![no_std]
#![no_main]

nexus_rt::entry!(samgrd::main);
