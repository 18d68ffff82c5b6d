//! CPU-specific code: entry, descriptor tables, ports, APICs, clock.
pub mod apic;
pub mod boot;
pub mod clock;
pub mod gdt;
pub mod idt;
pub mod port;
