//! Program loading: an embedded ELF image becomes a fresh address space.
//!
//! `nexus-elf` checks the image (static x86_64 executable, segments inside
//! the image range, no page shared by two segments, W^X, size bounds); the
//! loader maps each segment's pages with its own protection (text RX, rodata
//! R, data/bss RW+NX), copies the file bytes, and maps the stack below
//! `STACK_TOP` with an unmapped guard page under it.

use nexus_abi::layout::{self, PAGE};
use nexus_elf::{ElfError, Limits};

use crate::vm::{AddressSpace, Prot, VmError};

/// Largest image accepted.
pub const MAX_IMAGE: usize = 16 * 1024 * 1024;
/// Most memory (page-rounded) an image's segments may span.
pub const MAX_IMAGE_MEM: u64 = 32 * 1024 * 1024;

const LIMITS: Limits = Limits {
    user_base: layout::USER_START,
    user_end: layout::IMAGE_END,
    max_image_bytes: MAX_IMAGE,
    max_mem_bytes: MAX_IMAGE_MEM,
};

/// Why a program could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The image was refused.
    Elf(ElfError),
    /// Out of memory (quota or frames).
    Memory(VmError),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Elf(e) => write!(f, "bad image: {e}"),
            LoadError::Memory(e) => write!(f, "out of memory: {e:?}"),
        }
    }
}

/// A loaded program, ready to run.
pub struct Loaded {
    /// Its address space.
    pub space: AddressSpace,
    /// Entry point.
    pub entry: u64,
    /// Initial stack pointer (16-byte aligned).
    pub stack_top: u64,
}

/// Load `image` into a new address space with `quota_frames`.
pub fn load(image: &[u8], quota_frames: usize) -> Result<Loaded, LoadError> {
    let img = nexus_elf::parse(image, &LIMITS).map_err(LoadError::Elf)?;
    let mut space = AddressSpace::new(quota_frames).map_err(LoadError::Memory)?;
    for seg in img.segments() {
        let start = seg.page_start();
        let pages = (seg.page_end() - start) / PAGE;
        let prot = Prot {
            write: seg.writable,
            exec: seg.executable,
        };
        space
            .map_zeroed(start, pages, prot)
            .map_err(LoadError::Memory)?;
        let from = seg.file_offset as usize;
        let to = from + seg.file_len as usize;
        // parse() checked the file range against the image.
        let bytes = image.get(from..to).unwrap_or(&[]);
        space.fill(seg.vaddr, bytes).map_err(LoadError::Memory)?;
    }
    let stack_pages = layout::STACK_SIZE / PAGE;
    space
        .map_zeroed(
            layout::STACK_TOP - layout::STACK_SIZE,
            stack_pages,
            Prot::RW,
        )
        .map_err(LoadError::Memory)?;
    Ok(Loaded {
        space,
        entry: img.entry,
        stack_top: layout::STACK_TOP,
    })
}
