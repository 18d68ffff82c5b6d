//! PVH entry: 32-bit protected mode → long mode → `kernel_main`.
//!
//! QEMU's `-kernel` loader finds the `XEN_ELFNOTE_PHYS32_ENTRY` note and jumps
//! to `pvh_start32` in 32-bit protected mode, paging off, with `ebx` holding
//! the physical address of `hvm_start_info` (DESIGN §3). We zero `.bss`,
//! identity-map the first 4 GiB with 2 MiB pages (RAM, the virtio-mmio
//! window at 0xfeb00000, the IOAPIC and the local APIC all live there), turn
//! on long mode and call Rust on a 64 KiB boot stack.

core::arch::global_asm!(
    r#"
.section .note.Xen, "a", @note
.p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start32

.section .text.boot, "ax"
.code32
.global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi

    /* zero .bss (page tables and boot stack live there) */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4

    /* PDPT[0..4] -> PD0..PD3 */
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 1b

    /* 2048 x 2 MiB identity entries (present | writable | huge) */
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    /* CR4.PAE, CR3, EFER.LME, CR0.PG */
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

.code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    xor %rbp, %rbp

    /* SSE: the prebuilt core uses it. CR0.EM off, CR0.MP on,
       CR4.OSFXSR and CR4.OSXMMEXCPT on. */
    mov %cr0, %rax
    and $~(1 << 2), %rax
    or $(1 << 1), %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $((1 << 9) | (1 << 10)), %rax
    mov %rax, %cr4

    mov %esi, %edi
    call kernel_main
3:
    cli
    hlt
    jmp 3b

.section .rodata
.p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

.section .bss
.p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
/* Never mapped once the kernel's own tables are on (vm.rs): an overflow
   of the boot stack, which the scheduler runs on, faults here. */
.globl boot_stack_guard
boot_stack_guard:
    .skip 4096
boot_stack:
    .skip 65536
boot_stack_top:
"#,
    options(att_syntax)
);
