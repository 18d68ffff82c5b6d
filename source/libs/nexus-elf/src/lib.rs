//! The checks an ELF image must pass before the Nexus kernel maps it as a user program.
//!
//! [`parse`] reads a user program's image (a static, non-PIE x86_64 executable, built like
//! the kernel: `#![no_std] #![no_main]`, linked at a user base) and either returns the
//! segments the kernel should map or says, as an [`ElfError`], the first rule the image broke.
//! It is pure logic — no allocation, no unsafe code of its own, no panics on any input — so
//! it is tested on the host (unit tests per rule, and property tests that feed it arbitrary
//! and mutated images). The headers are decoded with the `xmas-elf` crate; the policy below
//! is ours.
//!
//! # The rules, and why each exists
//!
//! An image comes from a file the kernel did not write, so every field is hostile until
//! checked, and all arithmetic on it is overflow-checked.
//!
//! - **Size**: an image longer than [`Limits::max_image_bytes`] is refused before anything
//!   is read, so a huge image cannot make the kernel walk it.
//! - **Kind**: ELF magic, 64-bit, little-endian, x86_64, version 1, and `ET_EXEC`. The
//!   kernel has no relocator and no dynamic linker, so only static non-PIE executables can
//!   run; a 32-bit or big-endian image would be misread.
//! - **Program header table**: it must lie inside the file with 56-byte entries and known
//!   types; otherwise reading it would read past the image.
//! - **Static only**: `PT_INTERP` or `PT_DYNAMIC` means the image expects a dynamic linker
//!   or relocations that nobody will apply.
//! - **Executable stack**: a `PT_GNU_STACK` header with `PF_X` asks for an executable
//!   stack; user stacks are always mapped non-executable, so the image is refused rather
//!   than started with a promise we break.
//! - **Segment data**: `p_filesz <= p_memsz` (the bytes copied must fit the memory mapped)
//!   and `[p_offset, p_offset + p_filesz)` inside the file (the kernel copies exactly that
//!   range).
//! - **User range**: every `PT_LOAD` segment, rounded out to whole pages, lies inside
//!   `[user_base, user_end)`. This is what keeps an image from mapping pages over the
//!   kernel's half of the address space (or over page 0, when `user_base` is above it):
//!   the kernel maps what the image asks for, so the image may only ask for user addresses.
//! - **Page congruence**: `p_vaddr ≡ p_offset (mod 4096)`. The kernel maps 4 KiB pages; a
//!   segment whose file bytes do not sit at the same offset within a page as their virtual
//!   address is not what any linker produces for a page-mapped executable.
//! - **No page-level overlap**: two segments may not touch the same 4 KiB page, even when
//!   their byte ranges are disjoint. A page has one set of permissions; two segments sharing
//!   it (say text RX and data RW) would force the kernel to give the page the union of both,
//!   which is how W^X gets broken by accident. Link user programs with page-aligned segments
//!   (`-z separate-code`, or `ALIGN(4096)` between sections in the linker script).
//! - **W^X**: no segment may be both writable and executable: memory that can be written
//!   must not be run, so an overflow cannot plant code.
//! - **Memory limit**: the sum of the segments' page-rounded sizes is at most
//!   [`Limits::max_mem_bytes`], so an image with a 1 TiB `.bss` cannot exhaust frames.
//! - **Entry**: `e_entry` must lie inside an executable segment; otherwise the first
//!   instruction would fault (or run data).
//! - **Count**: at least one non-empty `PT_LOAD` segment and at most [`MAX_SEGMENTS`], so
//!   the result fits a fixed array with no allocation.
//!
//! `PT_LOAD` segments with `p_memsz == 0` map nothing and are skipped. Other header types
//! (`PT_NOTE`, `PT_PHDR`, `PT_GNU_STACK` without `PF_X`, `PT_GNU_RELRO`, …) are ignored.
//!
//! [`Limits`] should be page-aligned; the range check applies to the page-rounded segment,
//! which is what gets mapped.
#![no_std]

use core::fmt;

use xmas_elf::header::{self, Class, Data, Machine, Type as FileType};
use xmas_elf::program::{ProgramHeader, ProgramHeader64, Type as SegType};

/// At most this many (non-empty) `PT_LOAD` segments.
pub const MAX_SEGMENTS: usize = 16;

/// The page size the kernel maps user memory with.
pub const PAGE_SIZE: u64 = 4096;

/// Size of the ELF64 file header.
const EHDR_LEN: usize = 64;
/// Size of one ELF64 program header.
const PHDR_LEN: usize = 56;
/// `PT_GNU_STACK`: not decoded by name in `xmas-elf`.
const PT_GNU_STACK: u32 = 0x6474_e551;

/// What the kernel allows a user image to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lowest user virtual address a segment may use (page-aligned).
    pub user_base: u64,
    /// One past the highest user virtual address a segment may use (page-aligned).
    pub user_end: u64,
    /// Longest image accepted, in bytes.
    pub max_image_bytes: usize,
    /// Most memory the segments may take, counted in whole pages, in bytes.
    pub max_mem_bytes: u64,
}

/// One `PT_LOAD` segment that passed every check.
///
/// The kernel maps the pages covering `[vaddr, vaddr + mem_len)`, copies
/// `bytes[file_offset .. file_offset + file_len]` to `vaddr`, and zeroes the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_len: u64,
    pub file_offset: u64,
    pub file_len: u64,
    pub writable: bool,
    pub executable: bool,
}

impl Segment {
    const EMPTY: Segment = Segment {
        vaddr: 0,
        mem_len: 0,
        file_offset: 0,
        file_len: 0,
        writable: false,
        executable: false,
    };

    /// First page-aligned address of the segment.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }

    /// One past the last page of the segment (page-aligned). Checked by [`parse`] not to
    /// overflow, so it is exact for any segment it returned.
    pub fn page_end(&self) -> u64 {
        self.vaddr
            .saturating_add(self.mem_len)
            .saturating_add(PAGE_SIZE - 1)
            & !(PAGE_SIZE - 1)
    }
}

/// A checked image: the entry point and the segments to map, sorted by `vaddr`.
#[derive(Debug)]
pub struct Image {
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl Image {
    /// The segments to map, sorted by ascending `vaddr`, non-overlapping at page
    /// granularity, none empty.
    pub fn segments(&self) -> &[Segment] {
        self.segments.get(..self.count).unwrap_or(&[])
    }
}

/// The first rule an image broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Longer than [`Limits::max_image_bytes`].
    TooLarge,
    /// Too short for an ELF header, or no ELF magic.
    NotElf,
    /// Not `ELFCLASS64`.
    Not64Bit,
    /// Not `ELFDATA2LSB`.
    NotLittleEndian,
    /// Not `EM_X86_64`.
    NotX86_64,
    /// Not `ET_EXEC` (relocatable, shared object / PIE, core, …).
    NotExecutable,
    /// ELF version not 1, or `e_ehsize` not 64.
    BadHeader,
    /// Program header table outside the file, wrong entry size, or an unknown header type.
    BadProgramHeaders,
    /// No non-empty `PT_LOAD` segment.
    NoLoadSegment,
    /// More than [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments.
    TooManySegments,
    /// `PT_INTERP` or `PT_DYNAMIC` present.
    NotStatic,
    /// `PT_GNU_STACK` with `PF_X`.
    ExecutableStack,
    /// A segment with `p_filesz > p_memsz`.
    FileSizeOverMemSize,
    /// A segment's `[p_offset, p_offset + p_filesz)` is not inside the file.
    FileRangeOutOfBounds,
    /// A segment (page-rounded) is not inside `[user_base, user_end)`.
    OutsideUserRange,
    /// A segment's `p_vaddr` and `p_offset` differ modulo the page size.
    Misaligned,
    /// Two segments share at least one page.
    Overlap,
    /// A segment is both writable and executable.
    WritableAndExecutable,
    /// The segments' page-rounded sizes add up to more than [`Limits::max_mem_bytes`].
    OverMemoryLimit,
    /// `e_entry` is not inside an executable segment.
    BadEntry,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElfError::TooLarge => "image too large",
            ElfError::NotElf => "not an elf image",
            ElfError::Not64Bit => "not 64-bit",
            ElfError::NotLittleEndian => "not little-endian",
            ElfError::NotX86_64 => "not x86_64",
            ElfError::NotExecutable => "not a static executable (et_exec)",
            ElfError::BadHeader => "malformed elf header",
            ElfError::BadProgramHeaders => "program headers out of bounds or malformed",
            ElfError::NoLoadSegment => "no loadable segment",
            ElfError::TooManySegments => "too many segments",
            ElfError::NotStatic => "not statically linked (interp or dynamic)",
            ElfError::ExecutableStack => "executable stack",
            ElfError::FileSizeOverMemSize => "segment file size exceeds memory size",
            ElfError::FileRangeOutOfBounds => "segment data outside the file",
            ElfError::OutsideUserRange => "segment outside user range",
            ElfError::Misaligned => "segment address and offset not page-congruent",
            ElfError::Overlap => "segments overlap",
            ElfError::WritableAndExecutable => "segment both writable and executable",
            ElfError::OverMemoryLimit => "image memory over limit",
            ElfError::BadEntry => "entry point not in an executable segment",
        })
    }
}

impl core::error::Error for ElfError {}

/// An 8-byte-aligned copy of a header. `xmas-elf` (through `zero::read`) asserts that the
/// bytes it reinterprets are aligned for the header struct; the image may sit at any
/// address (e.g. `include_bytes!`), so headers are copied out first and never read in place.
#[repr(C, align(8))]
struct Aligned<const N: usize>([u8; N]);

impl<const N: usize> Aligned<N> {
    /// Copies `bytes[at .. at + N]`, or `None` when that is not inside `bytes`.
    fn copy_from(bytes: &[u8], at: u64) -> Option<Self> {
        let start = usize::try_from(at).ok()?;
        let src = bytes.get(start..start.checked_add(N)?)?;
        let mut buf = Aligned([0u8; N]);
        buf.0.copy_from_slice(src);
        Some(buf)
    }
}

/// Rounds `x` down to a page boundary.
fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// Rounds `x` up to a page boundary, `None` on overflow.
fn page_up(x: u64) -> Option<u64> {
    Some(x.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

/// Checks `bytes` as a user program image under `limits`; see the crate documentation for
/// the rules. Never panics. `bytes` may have any alignment.
///
/// ```
/// use nexus_elf::{parse, ElfError, Limits};
///
/// let limits = Limits {
///     user_base: 0x40_0000,
///     user_end: 0x7fff_ffff_f000,
///     max_image_bytes: 1 << 20,
///     max_mem_bytes: 16 << 20,
/// };
/// let err = parse(b"#!/bin/sh\n", &limits).unwrap_err();
/// assert_eq!(err, ElfError::NotElf);
/// assert_eq!(err.to_string(), "not an elf image");
/// ```
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Image, ElfError> {
    if bytes.len() > limits.max_image_bytes {
        return Err(ElfError::TooLarge);
    }

    // File header.
    let ehdr = Aligned::<EHDR_LEN>::copy_from(bytes, 0).ok_or(ElfError::NotElf)?;
    let hdr = match header::parse_header(&ehdr.0) {
        Ok(h) => h,
        Err(_) if ehdr.0.get(..4) == Some(&header::MAGIC[..]) => return Err(ElfError::Not64Bit),
        Err(_) => return Err(ElfError::NotElf),
    };
    if hdr.pt1.class() != Class::SixtyFour {
        return Err(ElfError::Not64Bit);
    }
    if hdr.pt1.data() != Data::LittleEndian {
        return Err(ElfError::NotLittleEndian);
    }
    if hdr.pt2.machine().as_machine() != Machine::X86_64 {
        return Err(ElfError::NotX86_64);
    }
    if hdr.pt2.type_().as_type() != FileType::Executable {
        return Err(ElfError::NotExecutable);
    }
    if hdr.pt1.version.as_version() != header::Version::Current
        || hdr.pt2.version() != 1
        || usize::from(hdr.pt2.header_size()) != EHDR_LEN
    {
        return Err(ElfError::BadHeader);
    }
    let entry = hdr.pt2.entry_point();

    // Program header table: inside the file, 56-byte entries.
    let ph_offset = hdr.pt2.ph_offset();
    let ph_count = hdr.pt2.ph_count();
    if usize::from(hdr.pt2.ph_entry_size()) != PHDR_LEN {
        return Err(ElfError::BadProgramHeaders);
    }
    let table_len = u64::from(ph_count) * PHDR_LEN as u64;
    let table_end = ph_offset
        .checked_add(table_len)
        .ok_or(ElfError::BadProgramHeaders)?;
    if table_end > bytes.len() as u64 {
        return Err(ElfError::BadProgramHeaders);
    }

    let file_len = bytes.len() as u64;
    let mut segments = [Segment::EMPTY; MAX_SEGMENTS];
    let mut count = 0usize;

    for index in 0..u64::from(ph_count) {
        let at = ph_offset + index * PHDR_LEN as u64; // < table_end: no overflow
        let raw = Aligned::<PHDR_LEN>::copy_from(bytes, at).ok_or(ElfError::BadProgramHeaders)?;
        // `raw` is exactly one aligned ProgramHeader64, so `zero::read` cannot fail here.
        let ph64: &ProgramHeader64 = zero::read(&raw.0);
        let ph = ProgramHeader::Ph64(ph64);
        let flags = ph.flags();
        let kind = ph.get_type().map_err(|_| ElfError::BadProgramHeaders)?;
        match kind {
            SegType::Load => {}
            SegType::Interp | SegType::Dynamic => return Err(ElfError::NotStatic),
            SegType::OsSpecific(PT_GNU_STACK) if flags.is_execute() => {
                return Err(ElfError::ExecutableStack)
            }
            _ => continue,
        }

        let vaddr = ph.virtual_addr();
        let mem_len = ph.mem_size();
        let file_offset = ph.offset();
        let file_size = ph.file_size();

        if file_size > mem_len {
            return Err(ElfError::FileSizeOverMemSize);
        }
        let file_end = file_offset
            .checked_add(file_size)
            .ok_or(ElfError::FileRangeOutOfBounds)?;
        if file_end > file_len {
            return Err(ElfError::FileRangeOutOfBounds);
        }
        if mem_len == 0 {
            continue; // maps nothing
        }
        let writable = flags.is_write();
        let executable = flags.is_execute();
        if writable && executable {
            return Err(ElfError::WritableAndExecutable);
        }
        let end = vaddr
            .checked_add(mem_len)
            .and_then(page_up)
            .ok_or(ElfError::OutsideUserRange)?;
        if page_down(vaddr) < limits.user_base || end > limits.user_end {
            return Err(ElfError::OutsideUserRange);
        }
        if vaddr % PAGE_SIZE != file_offset % PAGE_SIZE {
            return Err(ElfError::Misaligned);
        }
        let slot = segments.get_mut(count).ok_or(ElfError::TooManySegments)?;
        *slot = Segment {
            vaddr,
            mem_len,
            file_offset,
            file_len: file_size,
            writable,
            executable,
        };
        count += 1;
    }

    let found = segments.get_mut(..count).unwrap_or(&mut []);
    if found.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }
    found.sort_unstable_by_key(|s| s.vaddr);

    // Sorted by start; page ranges are disjoint iff each ends at or before the next starts.
    for pair in found.windows(2) {
        if let [a, b] = pair {
            if a.page_end() > b.page_start() {
                return Err(ElfError::Overlap);
            }
        }
    }

    let mut total: u64 = 0;
    for s in found.iter() {
        // Cannot overflow: the ranges are disjoint and inside the address space.
        total = total.saturating_add(s.page_end() - s.page_start());
    }
    if total > limits.max_mem_bytes {
        return Err(ElfError::OverMemoryLimit);
    }

    let entry_ok = found
        .iter()
        .any(|s| s.executable && entry >= s.vaddr && entry - s.vaddr < s.mem_len);
    if !entry_ok {
        return Err(ElfError::BadEntry);
    }

    Ok(Image {
        entry,
        segments,
        count,
    })
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests;
