"""Sizes, page flags and VMA flags with the kernel's names (x86-64, Linux 4.5)."""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
PMD_SHIFT = PAGE_SHIFT + HPAGE_PMD_ORDER
HPAGE_PMD_SIZE = 1 << PMD_SHIFT
HPAGE_PMD_MASK = ~(HPAGE_PMD_SIZE - 1)

# struct page flags (include/linux/page-flags.h); PG_double_map aliases PG_private_2 in page[1].
PG_locked = 1 << 0
PG_referenced = 1 << 2
PG_uptodate = 1 << 3
PG_dirty = 1 << 4
PG_lru = 1 << 5
PG_active = 1 << 6
PG_private_2 = 1 << 12
PG_double_map = PG_private_2
PG_writeback = 1 << 13
PG_head = 1 << 14
PG_tail = 1 << 15  # 4.5 marks tails by bit 0 of compound_head; a flag keeps it one array
PG_swapcache = 1 << 16
PG_swapbacked = 1 << 19
PG_reserved = 1 << 20
PG_ksm = 1 << 21  # 4.5 encodes KSM in page->mapping bits; a flag keeps the arrays numeric
PG_anon_exclusive = 1 << 22  # 5.19+: aliases PG_mappedtodisk; kpageflags bit 34 shows it
PG_mm_ids_shared = 1 << 23  # 6.15+: FOLIO_MM_IDS_SHARED_BIT of folio->_mm_ids, at the head
PG_allocated = 1 << 30  # model bookkeeping: the frame belongs to someone (not in the free lists)

PAGE_FLAG_NAMES = {
    PG_locked: "locked",
    PG_referenced: "referenced",
    PG_uptodate: "uptodate",
    PG_dirty: "dirty",
    PG_lru: "lru",
    PG_active: "active",
    PG_double_map: "double_map",
    PG_writeback: "writeback",
    PG_head: "head",
    PG_tail: "tail",
    PG_swapcache: "swapcache",
    PG_swapbacked: "swapbacked",
    PG_reserved: "reserved",
    PG_ksm: "ksm",
    PG_anon_exclusive: "anon_exclusive",
}

# vm_area_struct.vm_flags (include/linux/mm.h)
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_DONTCOPY = 0x20000
VM_SOFTDIRTY = 0x8000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000  # MADV_MERGEABLE: ksmd scans it

VM_FLAG_NAMES = {
    VM_READ: "read",
    VM_WRITE: "write",
    VM_EXEC: "exec",
    VM_SHARED: "shared",
    VM_DONTCOPY: "dontcopy",
    VM_SOFTDIRTY: "softdirty",
    VM_HUGEPAGE: "hugepage",
    VM_NOHUGEPAGE: "nohugepage",
    VM_MERGEABLE: "mergeable",
}

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

# fault flags and results (include/linux/mm.h)
FAULT_FLAG_WRITE = 0x01
VM_FAULT_OOM = 0x0001
VM_FAULT_SIGSEGV = 0x0040
VM_FAULT_WRITE = 0x0008
VM_FAULT_FALLBACK = 0x0800

# gup flags (include/linux/mm.h)
FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04
FOLL_FORCE = 0x10
FOLL_NUMA = 0x200
FOLL_LONGTERM = 0x10000  # 5.1: io_uring fixed buffers, RDMA, VFIO
FOLL_PIN = 0x40000  # 5.6/5.7: pin_user_pages(), counted apart from plain references

# madvise advice values (include/uapi/asm-generic/mman-common.h)
MADV_DONTNEED = 4
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_PAGEOUT = 21  # 5.4
MADV_COLLAPSE = 25  # 6.1

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2

# where mmap's top-down search starts (a typical x86-64 mmap_base)
TASK_UNMAPPED_TOP = 0x7F0000000000
TASK_SIZE = 0x7FFFFFFFF000
