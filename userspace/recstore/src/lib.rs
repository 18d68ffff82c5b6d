//! # nexus-recstore — a crash-consistent record store on a block device
//!
//! A small key → value store (keys 1..=64 bytes, values ≤ 4 KiB, ≤ 128 records,
//! all records ≤ one slot of at most 128 KiB) on any device of 512-byte sectors
//! ([`BlockDevice`]): virtio-blk in the OS, [`sim::SimDisk`] in tests.
//!
//! Every [`Store::put`] and [`Store::delete`] is atomic and durable: a power cut at
//! any sector write — including a torn write that leaves a sector half new — leaves
//! either the state before or the state after that call, never a mix, never an
//! older commit. Damage no power cut can cause (bit rot, foreign data) is reported
//! by [`Store::open`] as [`OpenError::Corrupt`] / [`OpenError::Foreign`] /
//! [`OpenError::Empty`]; `open` never formats. [`Store::format`] is separate.
//!
//! Design (details in `docs/storage.md` and [`layout`]): two shadow slots. A
//! commit writes the whole record image to the slot that does not hold the newest
//! commit, flushes, then writes that slot's header (sequence number, length,
//! CRC-32C of the image) twice, flushing after each copy. The first header copy is
//! the commit point; the second lets `open` tell a torn header write (recover)
//! from bit rot in the newest commit (refuse).
//!
//! The crate is `no_std` + `alloc`; the `std` feature only adds
//! `std::error::Error` impls.

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod device;
pub mod layout;
pub mod sim;
mod store;

pub use device::{BlockDevice, SECTOR_SIZE};
pub use layout::{MAX_KEY_LEN, MAX_RECORDS, MAX_SLOT_SECTORS, MAX_VALUE_LEN};
pub use store::{Corruption, Error, OpenError, OpenReport, StaleSlot, Stats, Store, MIN_SECTORS};
