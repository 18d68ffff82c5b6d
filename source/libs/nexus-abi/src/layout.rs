//! The user address space, shared by the kernel (which builds it) and the
//! runtime (which uses it), and the range check every syscall pointer passes.
//!
//! Everything a process can see lies in two ranges of the first PML4 slot:
//! `[USER_START, LOW_END)` (image and stack) and `[HEAP_START, USER_END)`
//! (heap, device windows, DMA). The kernel's own mappings (RAM identity map
//! below 1 GiB, the APIC/IOAPIC/virtio window at 3-4 GiB) sit in the same
//! slot, supervisor-only, outside both ranges: [`user_range`] refuses them
//! before any page table is consulted.
//!
//! | range | what |
//! | --- | --- |
//! | `0x4000_0000..0x7000_0000` | the ELF image (text RX, rodata R, data/bss RW+NX) |
//! | `0x7000_0000..0x7fff_f000` | the stack (grows down from `STACK_TOP`, guard page below) |
//! | `0x1_0000_0000..0x2_0000_0000` | the heap, grown by the `map` syscall under the quota |
//! | `0x2_0000_0000..0x3_0000_0000` | device register windows (`mmio_map`) |
//! | `0x3_0000_0000..0x4_0000_0000` | DMA memory (`dma_alloc`) |

/// Page size of every user mapping.
pub const PAGE: u64 = 4096;
/// Lowest user address.
pub const USER_START: u64 = 0x4000_0000;
/// End (exclusive) of the range an ELF image may occupy.
pub const IMAGE_END: u64 = 0x7000_0000;
/// End (exclusive) of the low user range (image and stack).
pub const LOW_END: u64 = 0x8000_0000;
/// Top of the initial stack (exclusive).
pub const STACK_TOP: u64 = 0x7fff_f000;
/// Stack size mapped at start.
pub const STACK_SIZE: u64 = 256 * 1024;
/// Heap region.
pub const HEAP_START: u64 = 0x1_0000_0000;
/// End of the heap region.
pub const HEAP_END: u64 = 0x2_0000_0000;
/// Device register windows.
pub const MMIO_START: u64 = 0x2_0000_0000;
/// End of the device window region.
pub const MMIO_END: u64 = 0x3_0000_0000;
/// DMA memory.
pub const DMA_START: u64 = 0x3_0000_0000;
/// End of the DMA region.
pub const DMA_END: u64 = 0x4_0000_0000;
/// End (exclusive) of user space.
pub const USER_END: u64 = 0x4_0000_0000;

/// Why a user range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `addr + len` overflows.
    Overflow,
    /// Some byte lies outside the two user ranges.
    OutsideUser,
}

/// Check that `[addr, addr + len)` lies inside one user range and return it
/// as `(start, end)`. A zero-length range is accepted anywhere in a user
/// range (including at its end) and touches no page. Overflow-safe.
pub fn user_range(addr: u64, len: u64) -> Result<(u64, u64), RangeError> {
    let end = addr.checked_add(len).ok_or(RangeError::Overflow)?;
    let low = addr >= USER_START && end <= LOW_END;
    let high = addr >= HEAP_START && end <= USER_END;
    if !(low || high) {
        return Err(RangeError::OutsideUser);
    }
    Ok((addr, end))
}

/// The pages `[first, last]` (page-aligned addresses) a non-empty checked
/// range touches; `None` for an empty range.
pub fn pages_of(start: u64, end: u64) -> Option<(u64, u64)> {
    if end <= start {
        return None;
    }
    Some((start & !(PAGE - 1), (end - 1) & !(PAGE - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_is_accepted() {
        assert_eq!(user_range(USER_START, 1), Ok((USER_START, USER_START + 1)));
        assert_eq!(user_range(USER_END - 1, 1), Ok((USER_END - 1, USER_END)));
        assert_eq!(user_range(HEAP_START, 0), Ok((HEAP_START, HEAP_START)));
        assert_eq!(user_range(USER_END, 0), Ok((USER_END, USER_END)));
    }

    #[test]
    fn kernel_and_wrapping_ranges_are_refused() {
        // The kernel's RAM identity map and its device window.
        assert_eq!(user_range(0x10_0000, 8), Err(RangeError::OutsideUser));
        assert_eq!(user_range(0xfee0_0000, 4), Err(RangeError::OutsideUser));
        // The kernel's hole between the two ranges, and straddling it.
        assert_eq!(user_range(LOW_END, 1), Err(RangeError::OutsideUser));
        assert_eq!(user_range(LOW_END - 1, 2), Err(RangeError::OutsideUser));
        assert_eq!(user_range(HEAP_START - 1, 2), Err(RangeError::OutsideUser));
        assert_eq!(user_range(STACK_TOP - 8, 8), Ok((STACK_TOP - 8, STACK_TOP)));
        // Straddling the bottom or the top.
        assert_eq!(user_range(USER_START - 1, 2), Err(RangeError::OutsideUser));
        assert_eq!(user_range(USER_END - 1, 2), Err(RangeError::OutsideUser));
        // Wrap-around.
        assert_eq!(user_range(u64::MAX, 2), Err(RangeError::Overflow));
        assert_eq!(user_range(HEAP_START, u64::MAX), Err(RangeError::Overflow));
        // Higher half.
        assert_eq!(
            user_range(0xffff_8000_0000_0000, 8),
            Err(RangeError::OutsideUser)
        );
    }

    #[test]
    fn pages_cover_exactly_the_range() {
        assert_eq!(pages_of(HEAP_START, HEAP_START), None);
        assert_eq!(
            pages_of(HEAP_START + 10, HEAP_START + 11),
            Some((HEAP_START, HEAP_START))
        );
        assert_eq!(
            pages_of(HEAP_START + 4095, HEAP_START + 4097),
            Some((HEAP_START, HEAP_START + 4096))
        );
        assert_eq!(
            pages_of(HEAP_START, HEAP_START + 4096),
            Some((HEAP_START, HEAP_START))
        );
    }

    #[test]
    fn regions_are_ordered_and_page_aligned() {
        let edges = [
            USER_START, IMAGE_END, STACK_TOP, LOW_END, HEAP_START, HEAP_END, MMIO_START, MMIO_END,
            DMA_START, DMA_END,
        ];
        for w in edges.windows(2) {
            assert!(w[0] <= w[1]);
        }
        for e in edges {
            assert_eq!(e % PAGE, 0);
        }
        assert_eq!(DMA_END, USER_END);
    }

    const _: () = assert!(STACK_TOP - STACK_SIZE > IMAGE_END);

    proptest::proptest! {
        #[test]
        fn accepted_ranges_are_inside(addr in proptest::num::u64::ANY, len in 0u64..1 << 40) {
            if let Ok((s, e)) = user_range(addr, len) {
                let low = s >= USER_START && e <= LOW_END;
                let high = s >= HEAP_START && e <= USER_END;
                proptest::prop_assert!((low || high) && e - s == len);
            }
        }
    }
}
