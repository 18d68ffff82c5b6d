//! Unit tests (one or more per rule) and property tests (arbitrary and mutated images).
//!
//! Images are built by [`build`], which writes a minimal ELF64 executable (file header,
//! program headers, segment bytes) from a list of segments, so a test can start from a
//! valid image and change one field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const PT_PHDR: u32 = 6;

const BASE: u64 = 0x40_0000;
const USER_END: u64 = 0x0000_7fff_ffff_f000;
const KERNEL: u64 = 0xffff_ffff_8000_0000;

// File header field offsets.
const E_CLASS: usize = 4;
const E_DATA: usize = 5;
const E_IDVERSION: usize = 6;
const E_TYPE: usize = 16;
const E_MACHINE: usize = 18;
const E_VERSION: usize = 20;
const E_ENTRY: usize = 24;
const E_PHOFF: usize = 32;
const E_EHSIZE: usize = 52;
const E_PHENTSIZE: usize = 54;
const E_PHNUM: usize = 56;

// Program header field offsets.
const P_TYPE: usize = 0;
const P_FLAGS: usize = 4;
const P_OFFSET: usize = 8;
const P_VADDR: usize = 16;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;

fn limits() -> Limits {
    Limits {
        user_base: BASE,
        user_end: USER_END,
        max_image_bytes: 1 << 20,
        max_mem_bytes: 16 << 20,
    }
}

/// One `PT_LOAD` segment for [`build`]; its file bytes are placed at an offset congruent to
/// `vaddr` modulo the page size.
#[derive(Clone, Copy, Debug)]
struct Seg {
    vaddr: u64,
    file_len: u64,
    mem_len: u64,
    flags: u32,
}

const fn seg(vaddr: u64, file_len: u64, mem_len: u64, flags: u32) -> Seg {
    Seg {
        vaddr,
        file_len,
        mem_len,
        flags,
    }
}

/// Builds an ELF64 x86_64 `ET_EXEC` image: the `PT_LOAD` headers for `segs` (in order),
/// then one header per `(p_type, p_flags)` in `extra` (offset and sizes 0).
fn build(entry: u64, segs: &[Seg], extra: &[(u32, u32)]) -> Vec<u8> {
    let phnum = segs.len() + extra.len();
    let mut img = vec![0u8; 64 + 56 * phnum];
    img[..4].copy_from_slice(b"\x7fELF");
    img[E_CLASS] = 2;
    img[E_DATA] = 1;
    img[E_IDVERSION] = 1;
    put16(&mut img, E_TYPE, 2);
    put16(&mut img, E_MACHINE, 0x3e);
    put32(&mut img, E_VERSION, 1);
    put64(&mut img, E_ENTRY, entry);
    put64(&mut img, E_PHOFF, 64);
    put16(&mut img, E_EHSIZE, 64);
    put16(&mut img, E_PHENTSIZE, 56);
    put16(&mut img, E_PHNUM, u16::try_from(phnum).unwrap());

    for (i, s) in segs.iter().enumerate() {
        let cursor = img.len() as u64;
        let offset = cursor + (s.vaddr.wrapping_sub(cursor) & (PAGE_SIZE - 1));
        img.resize(usize::try_from(offset).unwrap(), 0);
        img.extend((0..s.file_len).map(|b| (b as u8) ^ 0xa5));
        let ph = ph_at(i);
        put32(&mut img, ph + P_TYPE, PT_LOAD);
        put32(&mut img, ph + P_FLAGS, s.flags);
        put64(&mut img, ph + P_OFFSET, offset);
        put64(&mut img, ph + P_VADDR, s.vaddr);
        put64(&mut img, ph + 24, s.vaddr); // p_paddr
        put64(&mut img, ph + P_FILESZ, s.file_len);
        put64(&mut img, ph + P_MEMSZ, s.mem_len);
        put64(&mut img, ph + 48, PAGE_SIZE); // p_align
    }
    for (j, &(p_type, flags)) in extra.iter().enumerate() {
        let ph = ph_at(segs.len() + j);
        put32(&mut img, ph + P_TYPE, p_type);
        put32(&mut img, ph + P_FLAGS, flags);
    }
    img
}

/// Byte offset of program header `i` in an image from [`build`].
fn ph_at(i: usize) -> usize {
    64 + 56 * i
}

fn put16(img: &mut [u8], at: usize, v: u16) {
    img[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get16(img: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(img.get(at..at + 2)?.try_into().ok()?))
}
fn get32(img: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(img.get(at..at + 4)?.try_into().ok()?))
}
fn get64(img: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(img.get(at..at + 8)?.try_into().ok()?))
}

/// text RX, rodata R, data+bss RW, each in its own pages; GNU_STACK RW and a NOTE.
const TEXT: Seg = seg(BASE + 0x120, 0x300, 0x300, PF_R | PF_X);
const RODATA: Seg = seg(BASE + 0x1040, 0x80, 0x80, PF_R);
const DATA: Seg = seg(BASE + 0x2010, 0x40, 0x3000, PF_R | PF_W);
const ENTRY: u64 = BASE + 0x130;
const PT_GNU_STACK: u32 = super::PT_GNU_STACK;

fn valid() -> Vec<u8> {
    build(
        ENTRY,
        &[TEXT, RODATA, DATA],
        &[(PT_GNU_STACK, PF_R | PF_W), (PT_NOTE, PF_R)],
    )
}

fn err(img: &[u8]) -> ElfError {
    parse(img, &limits()).unwrap_err()
}

// ---------------------------------------------------------------------------------------
// Accepted images.

#[test]
fn valid_image_parses() {
    let img = valid();
    let image = parse(&img, &limits()).unwrap();
    assert_eq!(image.entry, ENTRY);
    let segs = image.segments();
    assert_eq!(segs.len(), 3);
    assert_eq!(
        segs[0],
        Segment {
            vaddr: TEXT.vaddr,
            mem_len: 0x300,
            file_offset: get64(&img, ph_at(0) + P_OFFSET).unwrap(),
            file_len: 0x300,
            writable: false,
            executable: true,
        }
    );
    assert!(!segs[1].writable && !segs[1].executable);
    assert!(segs[2].writable && !segs[2].executable);
    assert_eq!((segs[2].file_len, segs[2].mem_len), (0x40, 0x3000));
    check_invariants(&img, &limits(), &image);
}

#[test]
fn segments_come_back_sorted_by_address() {
    let img = build(ENTRY, &[DATA, TEXT, RODATA], &[]);
    let image = parse(&img, &limits()).unwrap();
    let addrs: Vec<u64> = image.segments().iter().map(|s| s.vaddr).collect();
    assert_eq!(addrs, [TEXT.vaddr, RODATA.vaddr, DATA.vaddr]);
}

#[test]
fn any_alignment_of_the_input_slice_parses() {
    let img = valid();
    for shift in 0..8 {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(&img);
        let image = parse(&buf[shift..], &limits()).unwrap();
        assert_eq!(image.segments().len(), 3, "shift {shift}");
    }
}

#[test]
fn zero_size_segments_are_skipped() {
    let empty = seg(KERNEL, 0, 0, PF_R | PF_W | PF_X); // would break three rules if mapped
    let img = build(ENTRY, &[TEXT, empty, RODATA], &[]);
    let image = parse(&img, &limits()).unwrap();
    assert_eq!(image.segments().len(), 2);
}

#[test]
fn harmless_headers_are_ignored() {
    let img = build(
        ENTRY,
        &[TEXT],
        &[
            (PT_PHDR, PF_R),
            (PT_NOTE, PF_R),
            (PT_GNU_STACK, PF_R | PF_W),
            (0, 0),
        ],
    );
    assert!(parse(&img, &limits()).is_ok());
}

#[test]
fn adjacent_pages_do_not_overlap() {
    let a = seg(BASE, 0x1000, 0x1000, PF_R | PF_X);
    let b = seg(BASE + 0x1000, 0x10, 0x1000, PF_R | PF_W);
    assert!(parse(&build(BASE, &[a, b], &[]), &limits()).is_ok());
}

#[test]
fn segments_touching_the_range_ends_are_inside() {
    let first = seg(BASE, 0x10, 0x10, PF_R | PF_X);
    let last = seg(USER_END - 0x1000, 0x10, 0x1000, PF_R | PF_W);
    assert!(parse(&build(BASE, &[first, last], &[]), &limits()).is_ok());
}

#[test]
fn exactly_max_segments_is_fine() {
    let segs: Vec<Seg> = (0..MAX_SEGMENTS as u64)
        .map(|i| {
            seg(
                BASE + i * 0x1000,
                0x10,
                0x10,
                if i == 0 { PF_R | PF_X } else { PF_R },
            )
        })
        .collect();
    let image = parse(&build(BASE, &segs, &[]), &limits()).unwrap();
    assert_eq!(image.segments().len(), MAX_SEGMENTS);
}

#[test]
fn memory_exactly_at_the_limit_is_fine() {
    let mut l = limits();
    l.max_mem_bytes = 6 * PAGE_SIZE; // text 1 page + rodata 1 + data 4 (0x2010 + 0x3000)
    assert!(parse(&valid(), &l).is_ok());
}

// ---------------------------------------------------------------------------------------
// One test (or more) per rule.

#[test]
fn rejects_image_over_max_bytes() {
    let img = valid();
    let mut l = limits();
    l.max_image_bytes = img.len() - 1;
    assert_eq!(parse(&img, &l).unwrap_err(), ElfError::TooLarge);
    l.max_image_bytes = img.len();
    assert!(parse(&img, &l).is_ok());
}

#[test]
fn rejects_non_elf() {
    assert_eq!(err(&[]), ElfError::NotElf);
    assert_eq!(err(&valid()[..63]), ElfError::NotElf);
    assert_eq!(err(&[0u8; 4096]), ElfError::NotElf);
    let mut img = valid();
    img[1] = b'e';
    assert_eq!(err(&img), ElfError::NotElf);
    let mut script = b"#!/bin/sh\n".to_vec();
    script.resize(256, b' ');
    assert_eq!(err(&script), ElfError::NotElf);
}

#[test]
fn rejects_non_64_bit() {
    for class in [0u8, 1, 3, 0xff] {
        let mut img = valid();
        img[E_CLASS] = class;
        assert_eq!(err(&img), ElfError::Not64Bit, "class {class}");
    }
}

#[test]
fn rejects_big_endian() {
    for data in [0u8, 2, 7] {
        let mut img = valid();
        img[E_DATA] = data;
        assert_eq!(err(&img), ElfError::NotLittleEndian, "data {data}");
    }
}

#[test]
fn rejects_other_machines() {
    for machine in [0u16, 3, 0xb7, 0xf3] {
        let mut img = valid();
        put16(&mut img, E_MACHINE, machine);
        assert_eq!(err(&img), ElfError::NotX86_64, "machine {machine:#x}");
    }
}

#[test]
fn rejects_non_exec_types() {
    // ET_NONE, ET_REL, ET_DYN (shared objects and PIE), ET_CORE, OS-specific.
    for ty in [0u16, 1, 3, 4, 0xfe00] {
        let mut img = valid();
        put16(&mut img, E_TYPE, ty);
        assert_eq!(err(&img), ElfError::NotExecutable, "type {ty:#x}");
    }
}

#[test]
fn rejects_bad_version_or_header_size() {
    let mut img = valid();
    img[E_IDVERSION] = 0;
    assert_eq!(err(&img), ElfError::BadHeader);
    let mut img = valid();
    put32(&mut img, E_VERSION, 2);
    assert_eq!(err(&img), ElfError::BadHeader);
    let mut img = valid();
    put16(&mut img, E_EHSIZE, 52);
    assert_eq!(err(&img), ElfError::BadHeader);
}

#[test]
fn rejects_program_headers_out_of_bounds_or_malformed() {
    let len = valid().len() as u64;
    let cases: [(usize, u64, u8); 7] = [
        (E_PHENTSIZE, 32, 2),       // short entries
        (E_PHENTSIZE, 64, 2),       // long entries
        (E_PHOFF, len, 8),          // table starts at the end of the file
        (E_PHOFF, len - 56, 8),     // table runs past the end
        (E_PHOFF, u64::MAX - 8, 8), // offset + size overflows
        (E_PHNUM, 0xffff, 2),       // more headers than the file holds
        (E_PHNUM, 200, 2),
    ];
    for (field, value, width) in cases {
        let mut img = valid();
        match width {
            2 => put16(&mut img, field, u16::try_from(value).unwrap()),
            _ => put64(&mut img, field, value),
        }
        assert_eq!(
            err(&img),
            ElfError::BadProgramHeaders,
            "field {field} = {value:#x}"
        );
    }
    // A header type no ELF defines.
    let mut img = valid();
    put32(&mut img, ph_at(3) + P_TYPE, 0x1234_5678);
    assert_eq!(err(&img), ElfError::BadProgramHeaders);
}

#[test]
fn rejects_images_without_load_segments() {
    let mut img = valid();
    put16(&mut img, E_PHNUM, 0);
    assert_eq!(err(&img), ElfError::NoLoadSegment);
    let only_notes = build(ENTRY, &[], &[(PT_NOTE, PF_R), (PT_GNU_STACK, PF_R | PF_W)]);
    assert_eq!(err(&only_notes), ElfError::NoLoadSegment);
    let only_empty = build(ENTRY, &[seg(BASE, 0, 0, PF_R | PF_X)], &[]);
    assert_eq!(err(&only_empty), ElfError::NoLoadSegment);
}

#[test]
fn rejects_more_than_max_segments() {
    let segs: Vec<Seg> = (0..=MAX_SEGMENTS as u64)
        .map(|i| {
            seg(
                BASE + i * 0x1000,
                0x10,
                0x10,
                if i == 0 { PF_R | PF_X } else { PF_R },
            )
        })
        .collect();
    assert_eq!(err(&build(BASE, &segs, &[])), ElfError::TooManySegments);
}

#[test]
fn rejects_interp_and_dynamic() {
    for ty in [PT_INTERP, PT_DYNAMIC] {
        let img = build(ENTRY, &[TEXT], &[(ty, PF_R)]);
        assert_eq!(err(&img), ElfError::NotStatic, "p_type {ty}");
    }
}

#[test]
fn rejects_executable_stack() {
    for flags in [PF_X, PF_R | PF_W | PF_X] {
        let img = build(ENTRY, &[TEXT], &[(PT_GNU_STACK, flags)]);
        assert_eq!(err(&img), ElfError::ExecutableStack, "flags {flags}");
    }
}

#[test]
fn rejects_file_size_over_mem_size() {
    let mut img = valid();
    put64(&mut img, ph_at(1) + P_FILESZ, RODATA.mem_len + 1);
    assert_eq!(err(&img), ElfError::FileSizeOverMemSize);
    // Even for a segment that would otherwise be skipped as empty.
    let mut img = valid();
    put64(&mut img, ph_at(1) + P_MEMSZ, 0);
    assert_eq!(err(&img), ElfError::FileSizeOverMemSize);
}

#[test]
fn rejects_file_range_outside_the_file() {
    let len = valid().len() as u64;
    // Data runs one byte past the end.
    let mut img = valid();
    let off = get64(&img, ph_at(2) + P_OFFSET).unwrap();
    put64(&mut img, ph_at(2) + P_FILESZ, len - off + 1);
    assert_eq!(err(&img), ElfError::FileRangeOutOfBounds);
    // Offset past the end (still page-congruent).
    let mut img = valid();
    put64(&mut img, ph_at(0) + P_OFFSET, off + 0x10_0000);
    assert_eq!(err(&img), ElfError::FileRangeOutOfBounds);
    // Offset + size overflows.
    let mut img = valid();
    put64(&mut img, ph_at(0) + P_OFFSET, u64::MAX - 0xff);
    assert_eq!(err(&img), ElfError::FileRangeOutOfBounds);
    // An empty bss segment whose offset lies outside the file.
    let mut img = valid();
    put64(&mut img, ph_at(2) + P_FILESZ, 0);
    put64(&mut img, ph_at(2) + P_OFFSET, u64::MAX);
    assert_eq!(err(&img), ElfError::FileRangeOutOfBounds);
}

#[test]
fn rejects_segments_outside_user_range() {
    // In the kernel's half, below the user base, across the user end, wrapping around.
    let vaddrs = [
        KERNEL + (TEXT.vaddr & 0xfff),
        0xffff_8000_0000_0000 + (TEXT.vaddr & 0xfff),
        TEXT.vaddr & 0xfff, // page 0
        BASE - 0x1000 + (TEXT.vaddr & 0xfff),
        USER_END - 0x100,                        // starts inside, ends past user_end
        u64::MAX - 0xfff + (TEXT.vaddr & 0xfff), // vaddr + memsz overflows
    ];
    for vaddr in vaddrs {
        let mut img = valid();
        put64(&mut img, ph_at(0) + P_VADDR, vaddr);
        assert_eq!(err(&img), ElfError::OutsideUserRange, "vaddr {vaddr:#x}");
    }
    // A huge bss that reaches the kernel.
    let mut img = valid();
    put64(&mut img, ph_at(2) + P_MEMSZ, KERNEL - DATA.vaddr);
    assert_eq!(err(&img), ElfError::OutsideUserRange);
    // A segment starting inside the page below user_base (its page is mapped too).
    let mut l = limits();
    l.user_base = BASE + 0x1000;
    let img = build(
        BASE + 0x1fff,
        &[seg(BASE + 0xff0, 0x20, 0x20, PF_R | PF_X)],
        &[],
    );
    assert_eq!(parse(&img, &l).unwrap_err(), ElfError::OutsideUserRange);
}

#[test]
fn rejects_vaddr_offset_not_congruent() {
    for delta in [1u64, 8, 0x800, 0xfff] {
        let mut img = valid();
        put64(&mut img, ph_at(1) + P_VADDR, RODATA.vaddr + delta);
        assert_eq!(err(&img), ElfError::Misaligned, "delta {delta:#x}");
    }
}

#[test]
fn rejects_overlap_at_page_granularity() {
    // Disjoint bytes, same page: text ends at BASE+0x100, data starts at BASE+0x800.
    let text = seg(BASE, 0x100, 0x100, PF_R | PF_X);
    let data = seg(BASE + 0x800, 0x10, 0x10, PF_R | PF_W);
    assert_eq!(err(&build(BASE, &[text, data], &[])), ElfError::Overlap);
    // Bss running into the next segment's page.
    let data = seg(BASE + 0x1000, 0x10, 0x1001, PF_R | PF_W);
    let ro = seg(BASE + 0x2ff0, 0x10, 0x10, PF_R);
    assert_eq!(err(&build(BASE, &[text, data, ro], &[])), ElfError::Overlap);
    // Plain byte overlap, listed in reverse order.
    let a = seg(BASE, 0x2000, 0x2000, PF_R | PF_X);
    let b = seg(BASE + 0x1000, 0x10, 0x10, PF_R);
    assert_eq!(err(&build(BASE, &[b, a], &[])), ElfError::Overlap);
    // The same segment twice.
    assert_eq!(err(&build(ENTRY, &[TEXT, TEXT], &[])), ElfError::Overlap);
}

#[test]
fn rejects_writable_and_executable() {
    let mut img = valid();
    put32(&mut img, ph_at(0) + P_FLAGS, PF_R | PF_W | PF_X);
    assert_eq!(err(&img), ElfError::WritableAndExecutable);
    let mut img = valid();
    put32(&mut img, ph_at(2) + P_FLAGS, PF_W | PF_X);
    assert_eq!(err(&img), ElfError::WritableAndExecutable);
}

#[test]
fn rejects_memory_over_limit() {
    let mut l = limits();
    l.max_mem_bytes = 6 * PAGE_SIZE - 1;
    assert_eq!(parse(&valid(), &l).unwrap_err(), ElfError::OverMemoryLimit);
    // A 1 GiB bss.
    let mut img = valid();
    put64(&mut img, ph_at(2) + P_MEMSZ, 1 << 30);
    assert_eq!(err(&img), ElfError::OverMemoryLimit);
}

#[test]
fn rejects_entry_outside_executable_segments() {
    let entries = [
        0,
        BASE,                      // below text, same page
        TEXT.vaddr + TEXT.mem_len, // one past the end of text
        RODATA.vaddr,              // readable, not executable
        DATA.vaddr + 0x100,        // writable
        KERNEL,                    // nowhere near
    ];
    for entry in entries {
        let mut img = valid();
        put64(&mut img, E_ENTRY, entry);
        assert_eq!(err(&img), ElfError::BadEntry, "entry {entry:#x}");
    }
    let mut img = valid();
    put64(&mut img, E_ENTRY, TEXT.vaddr + TEXT.mem_len - 1);
    assert!(parse(&img, &limits()).is_ok());
}

#[test]
fn error_messages_are_short_lower_case_and_distinct() {
    use std::string::ToString;
    let all = [
        ElfError::TooLarge,
        ElfError::NotElf,
        ElfError::Not64Bit,
        ElfError::NotLittleEndian,
        ElfError::NotX86_64,
        ElfError::NotExecutable,
        ElfError::BadHeader,
        ElfError::BadProgramHeaders,
        ElfError::NoLoadSegment,
        ElfError::TooManySegments,
        ElfError::NotStatic,
        ElfError::ExecutableStack,
        ElfError::FileSizeOverMemSize,
        ElfError::FileRangeOutOfBounds,
        ElfError::OutsideUserRange,
        ElfError::Misaligned,
        ElfError::Overlap,
        ElfError::WritableAndExecutable,
        ElfError::OverMemoryLimit,
        ElfError::BadEntry,
    ];
    let texts: Vec<_> = all.iter().map(ToString::to_string).collect();
    for t in &texts {
        assert!(!t.is_empty() && t.len() < 48, "{t:?}");
        assert_eq!(*t, t.to_lowercase());
    }
    for (i, t) in texts.iter().enumerate() {
        assert!(!texts[i + 1..].contains(t), "duplicate {t:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Independent re-check of an accepted image, straight from the bytes.

/// Asserts every promise [`parse`] makes about an `Ok` result, recomputed from the raw bytes
/// with 128-bit arithmetic (no overflow), without using the crate's own helpers.
fn check_invariants(bytes: &[u8], limits: &Limits, image: &Image) {
    let page = u128::from(PAGE_SIZE);
    let down = |x: u128| x / page * page;
    let up = |x: u128| x.div_ceil(page) * page;

    assert!(bytes.len() <= limits.max_image_bytes);
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!((bytes[E_CLASS], bytes[E_DATA]), (2, 1));
    assert_eq!(get16(bytes, E_TYPE), Some(2));
    assert_eq!(get16(bytes, E_MACHINE), Some(0x3e));
    assert_eq!(get64(bytes, E_ENTRY), Some(image.entry));

    // Raw program headers.
    let phoff = u128::from(get64(bytes, E_PHOFF).unwrap());
    let phnum = u128::from(get16(bytes, E_PHNUM).unwrap());
    assert_eq!(get16(bytes, E_PHENTSIZE), Some(56));
    assert!(phoff + 56 * phnum <= bytes.len() as u128);
    let mut raw_loads = Vec::new();
    for i in 0..phnum {
        let at = usize::try_from(phoff + 56 * i).unwrap();
        let ty = get32(bytes, at + P_TYPE).unwrap();
        let flags = get32(bytes, at + P_FLAGS).unwrap();
        assert!(
            ty != PT_INTERP && ty != PT_DYNAMIC,
            "dynamic image accepted"
        );
        assert!(
            !(ty == PT_GNU_STACK && flags & PF_X != 0),
            "executable stack accepted"
        );
        if ty == PT_LOAD && get64(bytes, at + P_MEMSZ).unwrap() != 0 {
            raw_loads.push(Segment {
                vaddr: get64(bytes, at + P_VADDR).unwrap(),
                mem_len: get64(bytes, at + P_MEMSZ).unwrap(),
                file_offset: get64(bytes, at + P_OFFSET).unwrap(),
                file_len: get64(bytes, at + P_FILESZ).unwrap(),
                writable: flags & PF_W != 0,
                executable: flags & PF_X != 0,
            });
        }
    }

    // The result is exactly the non-empty PT_LOADs, sorted.
    let segs = image.segments();
    assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
    let mut expected = raw_loads.clone();
    expected.sort_by_key(|s| s.vaddr);
    assert_eq!(segs, &expected[..]);

    let mut total = 0u128;
    for s in segs {
        let start = u128::from(s.vaddr);
        let end = start + u128::from(s.mem_len);
        assert!(s.mem_len > 0);
        assert!(s.file_len <= s.mem_len);
        assert!(u128::from(s.file_offset) + u128::from(s.file_len) <= bytes.len() as u128);
        assert!(
            down(start) >= u128::from(limits.user_base),
            "{s:?} below user range"
        );
        assert!(
            up(end) <= u128::from(limits.user_end),
            "{s:?} above user range"
        );
        assert_eq!(s.vaddr % PAGE_SIZE, s.file_offset % PAGE_SIZE);
        assert!(!(s.writable && s.executable), "W+X accepted: {s:?}");
        total += up(end) - down(start);
    }
    assert!(total <= u128::from(limits.max_mem_bytes));
    for (i, a) in segs.iter().enumerate() {
        for b in &segs[i + 1..] {
            let (a0, a1) = (
                down(a.vaddr.into()),
                up(u128::from(a.vaddr) + u128::from(a.mem_len)),
            );
            let (b0, b1) = (
                down(b.vaddr.into()),
                up(u128::from(b.vaddr) + u128::from(b.mem_len)),
            );
            assert!(a1 <= b0 || b1 <= a0, "page overlap: {a:?} {b:?}");
        }
    }
    let entry = u128::from(image.entry);
    assert!(
        segs.iter().any(|s| s.executable
            && entry >= u128::from(s.vaddr)
            && entry < u128::from(s.vaddr) + u128::from(s.mem_len)),
        "entry {:#x} not in an executable segment",
        image.entry
    );
}

// ---------------------------------------------------------------------------------------
// Property tests.

/// Values that sit on the boundaries the checks care about.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0xfff),
        Just(0x1000),
        Just(BASE),
        Just(BASE - 1),
        Just(USER_END),
        Just(USER_END - 1),
        Just(KERNEL),
        Just(1 << 47),
        Just(u64::MAX),
        Just(u64::MAX - 0xfff),
        Just(i64::MAX as u64),
        0u64..0x10000,
        BASE..BASE + 0x10000,
        any::<u64>(),
    ]
}

/// A segment near the user base with random placement, lengths and flags: sometimes
/// invalid on purpose (overlapping, W+X, flags outside R/W/X).
fn arb_seg() -> impl Strategy<Value = Seg> {
    (
        0u64..64,
        0u64..0x1000,
        0u64..0x300,
        0u64..0x4000,
        prop_oneof![
            4 => prop::sample::select(vec![PF_R, PF_R | PF_X, PF_R | PF_W, PF_X, PF_W, 0]),
            1 => any::<u32>(),
        ],
    )
        .prop_map(|(page, off, file_len, extra, flags)| Seg {
            vaddr: BASE + page * 0x1000 + off,
            file_len,
            mem_len: file_len + extra,
            flags,
        })
}

fn arb_extra() -> impl Strategy<Value = (u32, u32)> {
    (
        prop_oneof![
            3 => prop::sample::select(vec![PT_NOTE, PT_PHDR, PT_GNU_STACK, 0]),
            1 => prop::sample::select(vec![PT_INTERP, PT_DYNAMIC, PT_LOAD]),
            1 => any::<u32>(),
        ],
        0u32..8,
    )
}

/// Images from [`build`] with random segments and entry: a mix of valid and invalid.
fn arb_image() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            3 => prop::collection::vec(arb_seg(), 1..5),
            1 => prop::collection::vec(arb_seg(), 0..20),
        ],
        prop::collection::vec(arb_extra(), 0..3),
        any::<prop::sample::Index>(),
        0u64..0x400,
        prop_oneof![3 => Just(None), 1 => interesting_u64().prop_map(Some)],
    )
        .prop_map(|(segs, extra, pick, delta, raw_entry)| {
            // Mostly an entry near the start of some segment, so that the other rules decide.
            let entry = raw_entry.unwrap_or_else(|| {
                segs.get(pick.index(segs.len().max(1)))
                    .map_or(BASE, |s| s.vaddr + delta)
            });
            build(entry, &segs, &extra)
        })
}

/// A field of the file header or of a program header, with its width.
#[derive(Clone, Copy, Debug)]
enum Field {
    Ehdr(usize, u8),
    Phdr(usize, usize, u8),
}

fn arb_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        prop::sample::select(vec![
            (E_CLASS, 1u8),
            (E_DATA, 1),
            (E_TYPE, 2),
            (E_MACHINE, 2),
            (E_ENTRY, 8),
            (E_PHOFF, 8),
            (E_EHSIZE, 2),
            (E_PHENTSIZE, 2),
            (E_PHNUM, 2),
        ])
        .prop_map(|(at, w)| Field::Ehdr(at, w)),
        (
            0usize..6,
            prop::sample::select(vec![
                (P_TYPE, 4u8),
                (P_FLAGS, 4),
                (P_OFFSET, 8),
                (P_VADDR, 8),
                (P_FILESZ, 8),
                (P_MEMSZ, 8),
            ])
        )
            .prop_map(|(i, (at, w))| Field::Phdr(i, at, w)),
    ]
}

/// Writes `value` (truncated to the field's width) into `img`, if the field is inside it.
fn set_field(img: &mut [u8], field: Field, value: u64) {
    let (at, width) = match field {
        Field::Ehdr(at, w) => (at, w),
        Field::Phdr(i, at, w) => (ph_at(i) + at, w),
    };
    let width = usize::from(width);
    if let Some(dst) = img.get_mut(at..at + width) {
        dst.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let l = limits();
    if let Ok(image) = parse(bytes, &l) {
        check_invariants(bytes, &l, &image);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_file_header_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..2048),
        phnum in 0u16..40,
    ) {
        let mut bytes = valid()[..64].to_vec();
        put16(&mut bytes, E_PHNUM, phnum);
        bytes.extend(tail);
        check(&bytes)?;
    }

    #[test]
    fn random_images_are_accepted_only_when_sound(img in arb_image()) {
        check(&img)?;
    }

    #[test]
    fn byte_mutations_never_panic_and_keep_invariants(
        img in arb_image(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        shift in 0usize..8,
    ) {
        let mut img = img;
        for (at, v) in flips {
            let i = at.index(img.len());
            img[i] ^= v;
        }
        if truncate {
            img.truncate(cut.index(img.len() + 1));
        }
        // Parse from a slice at any alignment.
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(&img);
        check(&buf[shift..])?;
    }

    #[test]
    fn field_mutations_never_panic_and_keep_invariants(
        img in prop_oneof![Just(valid()), arb_image()],
        edits in prop::collection::vec((arb_field(), interesting_u64()), 1..5),
    ) {
        let mut img = img;
        for (field, value) in edits {
            set_field(&mut img, field, value);
        }
        check(&img)?;
    }

    /// Page-separated segments with W^X flags and the entry in the first (executable) one
    /// are always accepted, and come back as built.
    #[test]
    fn well_formed_images_are_accepted(
        layout in prop::collection::vec((1u64..4, 0u64..0x800, 1u64..0x2000, 0u32..3), 1..=MAX_SEGMENTS),
        entry_off in 0u64..0x800,
    ) {
        let mut segs = Vec::new();
        let mut next_page = BASE;
        for (i, &(gap, off, len, kind)) in layout.iter().enumerate() {
            let flags = match (i, kind) {
                (0, _) => PF_R | PF_X,
                (_, 0) => PF_R,
                (_, 1) => PF_R | PF_W,
                _ => PF_R | PF_X,
            };
            let vaddr = next_page + off;
            let file_len = len.min(0x400);
            segs.push(seg(vaddr, file_len, len, flags));
            next_page = (vaddr + len).div_ceil(PAGE_SIZE) * PAGE_SIZE + (gap - 1) * PAGE_SIZE;
        }
        let entry = segs[0].vaddr + entry_off % segs[0].mem_len;
        let img = build(entry, &segs, &[(PT_GNU_STACK, PF_R | PF_W)]);
        let image = parse(&img, &limits());
        prop_assert!(image.is_ok(), "{:?}", image);
        let image = image.unwrap();
        prop_assert_eq!(image.segments().len(), segs.len());
        check_invariants(&img, &limits(), &image);
    }
}
