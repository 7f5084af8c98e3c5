/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * subsec_trace.h - the contract between bpf/subsec_trace.bpf.c and
 * subsecinspect/probes/events.py (mirrored there with ctypes; a unit test
 * checks that the field lists agree).
 *
 * Events are lifecycle steps of ZONE_DEVICE / memory hotplug (memremap_pages,
 * memmap_init_zone_device, online_pages, ...) and walker hits: a PFN walker
 * (pfn_to_online_page, get_dev_pagemap, stable_page_flags, memory_failure, ...)
 * that was handed a PFN inside an unsafe window, i.e. a PFN whose struct page
 * is not initialised (kernel-semantics.md cases C1, C4, C4b, C5).
 */
#ifndef SUBSEC_TRACE_H
#define SUBSEC_TRACE_H

#define SUBSEC_COMM_LEN 16

/* enum subsec_kind: what an event is (values are part of the contract). */
#define SUBSEC_EV_MEMREMAP_ENTER      1   /* memremap_pages() entry, one event per range   */
#define SUBSEC_EV_MEMREMAP_RETURN     2   /* memremap_pages() return: arg = return value    */
#define SUBSEC_EV_MIZD_ENTER          3   /* memmap_init_zone_device() entry                */
#define SUBSEC_EV_MIZD_RETURN         4   /* memmap_init_zone_device() return: C4 closes     */
#define SUBSEC_EV_MOVE_PFN_RANGE      5   /* move_pfn_range_to_zone(): arg = zone index      */
#define SUBSEC_EV_MEMUNMAP_ENTER      6   /* memunmap_pages() entry, one event per range     */
#define SUBSEC_EV_MEMUNMAP_RETURN     7   /* memunmap_pages() return: windows removed        */
#define SUBSEC_EV_ADD_MEMORY          8   /* add_memory_resource() entry: C1 opens           */
#define SUBSEC_EV_ADD_MEMORY_RETURN   9   /* add_memory_resource() return: arg = rc          */
#define SUBSEC_EV_ONLINE_PAGES       10   /* online_pages() entry                            */
#define SUBSEC_EV_ONLINE_PAGES_RET   11   /* online_pages() return: arg = rc                 */
#define SUBSEC_EV_OFFLINE_PAGES      12   /* offline_pages() entry                           */
#define SUBSEC_EV_OFFLINE_PAGES_RET  13   /* offline_pages() return: arg = rc; C1 reopens    */
#define SUBSEC_EV_ONLINE_SECTIONS    14   /* online_mem_sections(start, end)                 */
#define SUBSEC_EV_OFFLINE_SECTIONS   15   /* offline_mem_sections(start, end)                */
#define SUBSEC_EV_SPARSE_ADD         16   /* sparse_add_section() entry                      */
#define SUBSEC_EV_SPARSE_REMOVE      17   /* sparse_remove_section() entry                   */
#define SUBSEC_EV_MOVE_PFN_RANGE_RET 18   /* move_pfn_range_to_zone() return: C1 closes      */
#define SUBSEC_EV_ADD_MEMORY_CALL    19   /* add_memory*() front door: arg = which (1..3)    */
#define SUBSEC_EV_REMOVE_PFN_RANGE   20   /* remove_pfn_range_from_zone()                    */
#define SUBSEC_EV_WALKER            32   /* a walker touched an unsafe window (see walker)  */

/* enum subsec_walker: which walker probe fired (SUBSEC_EV_WALKER only). */
#define SUBSEC_W_PFN_TO_ONLINE_PAGE   1   /* returned a page for an unsafe PFN              */
#define SUBSEC_W_GET_DEV_PAGEMAP      2   /* returned a live pgmap for an unsafe PFN        */
#define SUBSEC_W_PGMAP_PFN_VALID      3   /* answered true for an unsafe PFN                */
#define SUBSEC_W_MEMORY_FAILURE       4
#define SUBSEC_W_SOFT_OFFLINE         5
#define SUBSEC_W_KPAGEFLAGS           6   /* range of a /proc/kpage* read (note only)       */
#define SUBSEC_W_KPAGECOUNT           7
#define SUBSEC_W_KPAGECGROUP          8
#define SUBSEC_W_STABLE_PAGE_FLAGS    9   /* struct page of an unsafe PFN is read           */
#define SUBSEC_W_DUMP_PAGE           10
#define SUBSEC_W_HWPOISON_INJECT     11
#define SUBSEC_W_UNPOISON            12

/* enum subsec_class: the class of an unsafe window (0 = free slot / no window). */
#define SUBSEC_CLS_NONE   0
#define SUBSEC_CLS_C1     1   /* hot-added or offlined RAM, not online      */
#define SUBSEC_CLS_C4     2   /* pgmap registered, memmap not initialised   */
#define SUBSEC_CLS_C4B    3   /* pgmap being torn down (memunmap_pages)     */
#define SUBSEC_CLS_C5     4   /* altmap reserve: never initialised          */

/* enum subsec_phase: where the hotplug of the window's owner stands. */
#define SUBSEC_PH_NONE        0
#define SUBSEC_PH_SEEDED      1   /* known from the classification at start */
#define SUBSEC_PH_REGISTERED  2   /* memremap_pages() entered               */
#define SUBSEC_PH_MEMMAP_INIT 3   /* memmap_init_zone_device() running      */
#define SUBSEC_PH_TEARDOWN    4   /* memunmap_pages() entered               */
#define SUBSEC_PH_HOTADDED    5   /* add_memory_resource(), not yet online  */
#define SUBSEC_PH_OFFLINED    6   /* offline_pages() succeeded              */
#define SUBSEC_PH_RESERVED    7   /* altmap reserve of a live pgmap         */

/* enum subsec_severity */
#define SUBSEC_SEV_INFO  0   /* lifecycle */
#define SUBSEC_SEV_NOTE  1   /* a checking walker was handed an unsafe PFN      */
#define SUBSEC_SEV_ALARM 2   /* an unsafe struct page was (or will be) read     */

/* Per-CPU counters (stats map index). */
#define SUBSEC_ST_WALKER_CALLS   0   /* unused: see SUBSEC_STW_BASE         */
#define SUBSEC_ST_WINDOW_HITS    1   /* ... whose PFN was in a window       */
#define SUBSEC_ST_ALARMS         2
#define SUBSEC_ST_NOTES          3
#define SUBSEC_ST_LIFECYCLE      4
#define SUBSEC_ST_WINDOW_FULL    5   /* a window could not be stored        */
#define SUBSEC_ST_KPAGE_READS    6   /* /proc/kpage* read() calls           */
#define SUBSEC_ST_SUPPRESSED     7   /* repeated hits not sent (SUBSEC_ALARM_REPEAT) */
#define SUBSEC_ST_NR             8
/* ... then one counter per walker probe: stats[SUBSEC_STW_BASE + SUBSEC_W_*] = its calls,
 * any PFN (their sum is what walker_calls counted before). */
#define SUBSEC_STW_BASE          SUBSEC_ST_NR
#define SUBSEC_STW_SLOTS         (SUBSEC_ST_NR + 16)

/* One slot of the windows array. */
struct subsec_window {
	__u64 start_pfn;   /* inclusive */
	__u64 end_pfn;     /* exclusive */
	__u64 owner;       /* struct dev_pagemap *, 0 for none */
	__u32 cls;         /* SUBSEC_CLS_*, 0 = free slot */
	__u32 phase;       /* SUBSEC_PH_* */
};

/* Hull of the used window slots (bounds[0]): the walkers' fast path. */
struct subsec_bounds {
	__u64 lo;          /* lowest start_pfn */
	__u64 hi;          /* highest end_pfn (exclusive) */
	__u32 nwin;        /* used slots; 0 = no window */
	__u32 pad;
};

/* The event sent to user space (perf buffer). */
struct subsec_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns() */
	__u64 duration_ns;    /* return events: since the matching entry */
	__u64 pgmap;          /* struct dev_pagemap * (or owner of the hit window) */
	__u64 start_pfn;      /* lifecycle: range start; walker: the PFN */
	__u64 nr_pages;       /* lifecycle: range length; kpage*: PFNs read */
	__u64 arg;            /* kind-specific: return value, zone index, range index */
	__u64 altmap_base;    /* altmap base_pfn (when PGMAP_ALTMAP_VALID) */
	__u64 altmap_reserve;
	__u64 altmap_free;
	__u64 win_start;      /* walker: the window that was hit */
	__u64 win_end;
	__u32 kind;           /* SUBSEC_EV_* */
	__u32 walker;         /* SUBSEC_W_* */
	__u32 tid;
	__u32 tgid;
	__s32 kstack;         /* stack id in the stacks map, < 0 if none */
	__u32 cls;            /* SUBSEC_CLS_* of the hit window */
	__u32 phase;          /* SUBSEC_PH_* of the hit window */
	__u32 severity;       /* SUBSEC_SEV_* */
	__u32 pgmap_type;     /* enum memory_type; move_pfn_range_to_zone: ZONE_DEVICE's value */
	__u32 pgmap_flags;
	char comm[SUBSEC_COMM_LEN];
};

#endif /* SUBSEC_TRACE_H */
