/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * subsec_trace.bpf.c - kernel side of `subsecinspect trace` (bcc).
 *
 * Keeps the unsafe PFN windows of subsec_common.h (struct pages that are not
 * initialised: kernel-semantics.md C1, C4, C4b, C5) current from the hotplug lifecycle
 * probes, and checks the PFN of every walker probe against them IN THE KERNEL.
 * Only lifecycle events and walker hits inside a window reach user space.
 *
 * Lifecycle (kernel-semantics.md §2.5, §2.6):
 *   memremap_pages() entry        open C4 per range (+ C5 for the altmap reserve)
 *   memmap_init_zone_device() ret close C4 of that range (data pages initialised)
 *   memremap_pages() ret < 0      drop every window of the pgmap
 *   memunmap_pages() entry        open C4b per range (percpu_ref_kill follows)
 *   memunmap_pages() ret          drop every window of the pgmap
 *   add_memory_resource() entry   mark the sections C1 (dropped again if it fails)
 *   move_pfn_range_to_zone() ret  (zone != ZONE_DEVICE) memmap initialised: C1 closes
 *   offline_pages() ret == 0      mark the sections C1 again
 *
 * Configuration is passed by the front end as -D flags (never by editing this
 * text); every SUBSEC_* macro has a default (the windows' own in subsec_common.h):
 *   SUBSEC_ALARM_REPEAT     hits reported per (process, walker, window); the rest counted
 *   SUBSEC_MAX_RANGES       pgmap ranges looked at per memremap_pages()/memunmap_pages()
 *   SUBSEC_SPARSE_REMOVE_MS sparse_remove_section() takes a struct mem_section *
 *                           first (before "mm/sparse: ..." dropped it, 6.1 and older)
 *   SUBSEC_GDP_ONE_ARG      get_dev_pagemap() takes only the PFN (7.x); both
 *                           forms pass the PFN in the first register, so this only
 *                           documents the build
 *   SUBSEC_FENTRY           also build fentry/fexit programs of the per-PFN walkers
 *                           (bcc supports them and the kernel has BTF + BPF trampolines)
 */
#include "subsec_common.h"   /* compiled before this file: see its header comment */

#include <linux/memremap.h>
#include <linux/ioport.h>

#ifndef SUBSEC_ALARM_REPEAT
#define SUBSEC_ALARM_REPEAT 3
#endif
#ifndef SUBSEC_MAX_RANGES
#define SUBSEC_MAX_RANGES 4
#endif
#ifndef SUBSEC_SPARSE_REMOVE_MS
#define SUBSEC_SPARSE_REMOVE_MS 0
#endif
#ifndef SUBSEC_FENTRY
#define SUBSEC_FENTRY 0
#endif

/* --- maps (the windows, c1_sections and stats are in subsec_common.h) --- */

/* Kernel stacks of walker hits. */
BPF_STACK_TRACE(stacks, 1024);
BPF_PERF_OUTPUT(events);
/* (tgid, walker, window) -> hits reported: at most SUBSEC_ALARM_REPEAT reach user space. */
struct subsec_seen_key {
	u32 tgid;
	u16 walker;
	u16 cls;
	u64 win_start;
};
BPF_HASH(seen, struct subsec_seen_key, u32, 4096);

/* Entry state of a lifecycle function, for its return probe (lifecycle_return()). */
struct subsec_entry {
	u64 ts;
	u64 pgmap;
	u64 start_pfn;
	u64 nr_pages;
	u64 arg;      /* move_pfn_range_to_zone(): the zone index */
};
/* Keyed by tid_key(entry event kind): the functions nest (add_memory_resource() onlines
 * through online_pages() and move_pfn_range_to_zone()), one call per function and thread.
 * 1024 calls in flight per lifecycle function with a return probe (7). */
BPF_HASH(entries, u64, struct subsec_entry, 7 * 1024);

/* A walker whose verdict depends on its return value: stashed at entry. */
struct subsec_pending {
	struct subsec_hit hit;
	s32 kstack;
	u32 walker;
};
/* Keyed by tid_key(walker): get_dev_pagemap() runs nested inside pfn_to_online_page()
 * (collision sections, v5.12+) and must not overwrite its entry. */
BPF_HASH(pending, u64, struct subsec_pending, 4096);

/* --- helpers ---------------------------------------------------------- */

/* The key of a per-thread entry: @id (SUBSEC_EV_* or SUBSEC_W_*) and the thread id. */
static __always_inline u64 tid_key(u32 id)
{
	return ((u64)id << 32) | (u32)bpf_get_current_pid_tgid();
}

static __always_inline void ev_init(struct subsec_event *ev, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	ev->ts_ns = bpf_ktime_get_ns();
	ev->kind = kind;
	ev->tid = (u32)id;
	ev->tgid = id >> 32;
	ev->kstack = -1;
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
}

/* ctx: struct pt_regs * (kprobes) or the u64 argument array (fentry/fexit). */
static __always_inline void emit_walker(void *ctx, struct subsec_hit *hit,
					u32 walker, u32 severity, s32 kstack, u64 nr)
{
	/* A looping walker hits the same window again and again: report the first few. */
	struct subsec_seen_key sk = {.tgid = bpf_get_current_pid_tgid() >> 32, .walker = walker,
				     .cls = hit->cls, .win_start = hit->win_start};
	u32 one = 1;
	u32 *n = seen.lookup(&sk);
	if (n) {
		if (*n >= SUBSEC_ALARM_REPEAT) {
			stat_inc(SUBSEC_ST_SUPPRESSED);
			return;
		}
		*n += 1;
	} else {
		seen.update(&sk, &one);
	}
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_WALKER);
	ev.walker = walker;
	ev.severity = severity;
	ev.start_pfn = hit->pfn;
	ev.nr_pages = nr;
	ev.pgmap = hit->owner;
	ev.win_start = hit->win_start;
	ev.win_end = hit->win_end;
	ev.cls = hit->cls;
	ev.phase = hit->phase;
	ev.kstack = kstack;
	stat_inc(severity == SUBSEC_SEV_ALARM ? SUBSEC_ST_ALARMS : SUBSEC_ST_NOTES);
	events.perf_submit(ctx, &ev, sizeof(ev));
}

static __always_inline void emit_lifecycle(struct pt_regs *ctx, struct subsec_event *ev)
{
	ev->severity = SUBSEC_SEV_INFO;
	stat_inc(SUBSEC_ST_LIFECYCLE);
	events.perf_submit(ctx, ev, sizeof(*ev));
}

/* A lifecycle event that carries only a range (and the pgmap or a kind-specific arg). */
static __always_inline int emit_range(struct pt_regs *ctx, u32 kind, u64 start_pfn,
				      u64 nr_pages, u64 pgmap, u64 arg)
{
	struct subsec_event ev = {};
	ev_init(&ev, kind);
	ev.start_pfn = start_pfn;
	ev.nr_pages = nr_pages;
	ev.pgmap = pgmap;
	ev.arg = arg;
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* Entry half of a lifecycle function with a return probe: stash @e under @probe. */
static __always_inline void lifecycle_enter(u32 probe, struct subsec_entry *e)
{
	u64 key = tid_key(probe);
	e->ts = bpf_ktime_get_ns();
	entries.update(&key, e);
}

/*
 * Return half, the same for every lifecycle function: take what lifecycle_enter(@probe)
 * stashed and start the @kind event from it (pgmap, range, arg, time since the entry).
 * False when nothing was stashed (the call began before the entry probe was attached).
 */
static __always_inline bool lifecycle_return(u32 probe, u32 kind, struct subsec_event *ev)
{
	u64 key = tid_key(probe);
	struct subsec_entry *e = entries.lookup(&key);
	if (!e)
		return false;
	ev_init(ev, kind);
	ev->pgmap = e->pgmap;
	ev->start_pfn = e->start_pfn;
	ev->nr_pages = e->nr_pages;
	ev->arg = e->arg;
	ev->duration_ns = ev->ts_ns - e->ts;
	entries.delete(&key);
	return true;
}

/* --- ZONE_DEVICE lifecycle: mm/memremap.c, mm/mm_init.c ---------------- */

/*
 * Open a @cls window on every range of @pgmap, one @kind event per range; @ev carries the
 * pgmap's fields, and its altmap goes with range 0 only (the altmap is only allowed on
 * range 0: pagemap_range() WARNs otherwise).
 */
static __always_inline void pgmap_ranges_open(struct pt_regs *ctx, struct dev_pagemap *pgmap,
					      u32 kind, u32 cls, u32 phase,
					      struct subsec_event *ev)
{
	int nr_range = 0;
	bpf_probe_read_kernel(&nr_range, sizeof(nr_range), &pgmap->nr_range);
	#pragma clang loop unroll(disable)
	for (int i = 0; i < SUBSEC_MAX_RANGES; i++) {
		if (i >= nr_range)
			break;
		struct range r = {};
		bpf_probe_read_kernel(&r, sizeof(r), &pgmap->ranges[i]);
		u64 start = r.start >> PAGE_SHIFT, end = (r.end >> PAGE_SHIFT) + 1;
		window_add(start, end, (u64)pgmap, cls, phase);
		ev_init(ev, kind);
		ev->start_pfn = start;
		ev->nr_pages = end - start;
		ev->arg = i;
		emit_lifecycle(ctx, ev);
		ev->altmap_base = ev->altmap_reserve = ev->altmap_free = 0;
	}
}

/* void *memremap_pages(struct dev_pagemap *pgmap, int nid) */
int on_memremap_pages(struct pt_regs *ctx)
{
	struct dev_pagemap *pgmap = (struct dev_pagemap *)PT_REGS_PARM1(ctx);
	struct subsec_entry e = {.pgmap = (u64)pgmap};
	lifecycle_enter(SUBSEC_EV_MEMREMAP_ENTER, &e);

	unsigned int flags = 0;
	int type = 0;
	struct vmem_altmap alt = {};
	bpf_probe_read_kernel(&flags, sizeof(flags), &pgmap->flags);
	bpf_probe_read_kernel(&type, sizeof(type), &pgmap->type);
	bpf_probe_read_kernel(&alt, sizeof(alt), &pgmap->altmap);
	bool has_alt = flags & PGMAP_ALTMAP_VALID;
	struct subsec_event ev = {.pgmap = (u64)pgmap, .pgmap_type = type, .pgmap_flags = flags};
	if (has_alt) {
		ev.altmap_base = alt.base_pfn;
		ev.altmap_reserve = alt.reserve;
		ev.altmap_free = alt.free;
	}
	pgmap_ranges_open(ctx, pgmap, SUBSEC_EV_MEMREMAP_ENTER, SUBSEC_CLS_C4,
			  SUBSEC_PH_REGISTERED, &ev);
	if (has_alt && alt.reserve)
		window_add(alt.base_pfn, alt.base_pfn + alt.reserve, (u64)pgmap, SUBSEC_CLS_C5,
			   SUBSEC_PH_RESERVED);
	return 0;
}

int on_memremap_pages_ret(struct pt_regs *ctx)
{
	struct subsec_event ev = {};
	if (!lifecycle_return(SUBSEC_EV_MEMREMAP_ENTER, SUBSEC_EV_MEMREMAP_RETURN, &ev))
		return 0;
	long rc = PT_REGS_RC(ctx);
	ev.arg = rc;
	if (rc < 0 && rc >= -4095)  /* IS_ERR(): memunmap_pages() already undid it */
		window_drop(ev.pgmap, 0, ~0ULL);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void memmap_init_zone_device(struct zone *zone, unsigned long start_pfn,
 *                              unsigned long nr_pages, struct dev_pagemap *pgmap) */
int on_mizd(struct pt_regs *ctx)
{
	struct subsec_entry e = {
		.start_pfn = PT_REGS_PARM2(ctx),
		.nr_pages = PT_REGS_PARM3(ctx),
		.pgmap = PT_REGS_PARM4(ctx),
	};
	lifecycle_enter(SUBSEC_EV_MIZD_ENTER, &e);
	window_set_phase(e.pgmap, SUBSEC_CLS_C4, e.start_pfn, SUBSEC_PH_MEMMAP_INIT);
	return emit_range(ctx, SUBSEC_EV_MIZD_ENTER, e.start_pfn, e.nr_pages, e.pgmap, 0);
}

/* Return of memmap_init_zone_device() (@cls C4: the range's data pages are initialised,
 * its window closes) or of memunmap_pages() (@cls 0: every window of the pgmap goes). */
static __always_inline int pgmap_windows_close(struct pt_regs *ctx, u32 probe, u32 kind,
					       u32 cls)
{
	struct subsec_event ev = {};
	if (!lifecycle_return(probe, kind, &ev))
		return 0;
	window_drop(ev.pgmap, cls, cls ? ev.start_pfn : ~0ULL);
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_mizd_ret(struct pt_regs *ctx)
{
	return pgmap_windows_close(ctx, SUBSEC_EV_MIZD_ENTER, SUBSEC_EV_MIZD_RETURN,
				   SUBSEC_CLS_C4);
}

/* void memunmap_pages(struct dev_pagemap *pgmap) */
int on_memunmap_pages(struct pt_regs *ctx)
{
	struct dev_pagemap *pgmap = (struct dev_pagemap *)PT_REGS_PARM1(ctx);
	struct subsec_entry e = {.pgmap = (u64)pgmap};
	lifecycle_enter(SUBSEC_EV_MEMUNMAP_ENTER, &e);
	int type = 0;
	bpf_probe_read_kernel(&type, sizeof(type), &pgmap->type);
	struct subsec_event ev = {.pgmap = (u64)pgmap, .pgmap_type = type};
	pgmap_ranges_open(ctx, pgmap, SUBSEC_EV_MEMUNMAP_ENTER, SUBSEC_CLS_C4B,
			  SUBSEC_PH_TEARDOWN, &ev);
	return 0;
}

int on_memunmap_pages_ret(struct pt_regs *ctx)
{
	return pgmap_windows_close(ctx, SUBSEC_EV_MEMUNMAP_ENTER, SUBSEC_EV_MEMUNMAP_RETURN, 0);
}

/* void move_pfn_range_to_zone(struct zone *zone, unsigned long start_pfn,
 *                             unsigned long nr_pages, struct vmem_altmap *altmap, int mt ...) */
int on_move_pfn_range(struct pt_regs *ctx)
{
	struct zone *zone = (struct zone *)PT_REGS_PARM1(ctx);
	struct pglist_data *pgdat = NULL;
	bpf_probe_read_kernel(&pgdat, sizeof(pgdat), &zone->zone_pgdat);
	u64 zidx = ((u64)zone - (u64)&pgdat->node_zones[0]) / sizeof(struct zone);
	struct subsec_entry e = {
		.start_pfn = PT_REGS_PARM2(ctx),
		.nr_pages = PT_REGS_PARM3(ctx),
		.arg = zidx,
	};
	lifecycle_enter(SUBSEC_EV_MOVE_PFN_RANGE, &e);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MOVE_PFN_RANGE);
	ev.pgmap_type = ZONE_DEVICE;   /* so that user space can tell the zone */
	ev.start_pfn = e.start_pfn;
	ev.nr_pages = e.nr_pages;
	ev.arg = zidx;
	struct vmem_altmap *altmap = (struct vmem_altmap *)PT_REGS_PARM4(ctx);
	if (altmap) {
		bpf_probe_read_kernel(&ev.altmap_base, sizeof(ev.altmap_base), &altmap->base_pfn);
		bpf_probe_read_kernel(&ev.altmap_reserve, sizeof(ev.altmap_reserve), &altmap->reserve);
		bpf_probe_read_kernel(&ev.altmap_free, sizeof(ev.altmap_free), &altmap->free);
	}
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_move_pfn_range_ret(struct pt_regs *ctx)
{
	struct subsec_event ev = {};
	if (!lifecycle_return(SUBSEC_EV_MOVE_PFN_RANGE, SUBSEC_EV_MOVE_PFN_RANGE_RET, &ev))
		return 0;
	ev.pgmap_type = ZONE_DEVICE;
	/* onlining: memmap_init_range() has initialised the memmap (§2.6 step 3) */
	if (ev.arg != ZONE_DEVICE)
		c1_update(ev.start_pfn, ev.start_pfn + ev.nr_pages, 0);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* --- memory hotplug: mm/memory_hotplug.c, mm/sparse.c ------------------ */

/* int add_memory_resource(int nid, struct resource *res, mhp_t mhp_flags) */
int on_add_memory_resource(struct pt_regs *ctx)
{
	struct resource *res = (struct resource *)PT_REGS_PARM2(ctx);
	u64 start = 0, end = 0;
	bpf_probe_read_kernel(&start, sizeof(start), &res->start);
	bpf_probe_read_kernel(&end, sizeof(end), &res->end);
	u64 spfn = start >> PAGE_SHIFT, epfn = (end >> PAGE_SHIFT) + 1;
	struct subsec_entry e = {.start_pfn = spfn, .nr_pages = epfn - spfn};
	lifecycle_enter(SUBSEC_EV_ADD_MEMORY, &e);
	/* Before sparse_add_section(): pfn_valid() turns true inside, memmap garbage. */
	c1_update(spfn, epfn, SUBSEC_PH_HOTADDED);
	return emit_range(ctx, SUBSEC_EV_ADD_MEMORY, spfn, epfn - spfn, 0, 0);
}

/*
 * Return of add_memory_resource(), online_pages(), offline_pages(): arg = the int they
 * return; when it is 0 (@on_success) or not (!@on_success), the range's sections become
 * C1 with @phase (0: no longer C1).
 */
static __always_inline int range_return(struct pt_regs *ctx, u32 probe, u32 kind,
					bool on_success, u32 phase)
{
	struct subsec_event ev = {};
	if (!lifecycle_return(probe, kind, &ev))
		return 0;
	long rc = PT_REGS_RC(ctx);
	ev.arg = rc;
	if ((rc == 0) == on_success)
		c1_update(ev.start_pfn, ev.start_pfn + ev.nr_pages, phase);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* failed hot-add: the sections are gone again */
int on_add_memory_resource_ret(struct pt_regs *ctx)
{
	return range_return(ctx, SUBSEC_EV_ADD_MEMORY, SUBSEC_EV_ADD_MEMORY_RETURN, false, 0);
}

/* add_memory(nid, start, size, ...), __add_memory(...), add_memory_driver_managed(...) */
static __always_inline int add_memory_call(struct pt_regs *ctx, u64 which)
{
	return emit_range(ctx, SUBSEC_EV_ADD_MEMORY_CALL, PT_REGS_PARM2(ctx) >> PAGE_SHIFT,
			  PT_REGS_PARM3(ctx) >> PAGE_SHIFT, 0, which);
}
int on_add_memory(struct pt_regs *ctx) { return add_memory_call(ctx, 1); }
int on___add_memory(struct pt_regs *ctx) { return add_memory_call(ctx, 2); }
int on_add_memory_driver_managed(struct pt_regs *ctx) { return add_memory_call(ctx, 3); }

/* int online_pages(unsigned long pfn, unsigned long nr_pages, struct zone *zone, ...) */
static __always_inline int range_entry(struct pt_regs *ctx, u32 kind)
{
	struct subsec_entry e = {.start_pfn = PT_REGS_PARM1(ctx), .nr_pages = PT_REGS_PARM2(ctx)};
	lifecycle_enter(kind, &e);
	return emit_range(ctx, kind, e.start_pfn, e.nr_pages, 0, 0);
}

int on_online_pages(struct pt_regs *ctx) { return range_entry(ctx, SUBSEC_EV_ONLINE_PAGES); }
int on_offline_pages(struct pt_regs *ctx) { return range_entry(ctx, SUBSEC_EV_OFFLINE_PAGES); }

/* failed onlining: remove_pfn_range_from_zone() made the memmap stale again */
int on_online_pages_ret(struct pt_regs *ctx)
{
	return range_return(ctx, SUBSEC_EV_ONLINE_PAGES, SUBSEC_EV_ONLINE_PAGES_RET, false,
			    SUBSEC_PH_HOTADDED);
}

int on_offline_pages_ret(struct pt_regs *ctx)
{
	return range_return(ctx, SUBSEC_EV_OFFLINE_PAGES, SUBSEC_EV_OFFLINE_PAGES_RET, true,
			    SUBSEC_PH_OFFLINED);
}

/* void online_mem_sections(unsigned long start_pfn, unsigned long end_pfn) (and offline_) */
static __always_inline int sections_event(struct pt_regs *ctx, u32 kind)
{
	return emit_range(ctx, kind, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx) - PT_REGS_PARM1(ctx),
			  0, 0);
}
int on_online_mem_sections(struct pt_regs *ctx)
{ return sections_event(ctx, SUBSEC_EV_ONLINE_SECTIONS); }
int on_offline_mem_sections(struct pt_regs *ctx)
{ return sections_event(ctx, SUBSEC_EV_OFFLINE_SECTIONS); }

/* int sparse_add_section(int nid, unsigned long pfn, unsigned long nr_pages,
 *                        struct vmem_altmap *altmap, struct dev_pagemap *pgmap) */
int on_sparse_add_section(struct pt_regs *ctx)
{
	return emit_range(ctx, SUBSEC_EV_SPARSE_ADD, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
			  PT_REGS_PARM5(ctx), 0);
}

/* void sparse_remove_section([struct mem_section *ms,] unsigned long pfn,
 *                            unsigned long nr_pages, ...) */
int on_sparse_remove_section(struct pt_regs *ctx)
{
#if SUBSEC_SPARSE_REMOVE_MS
	u64 pfn = PT_REGS_PARM2(ctx), nr = PT_REGS_PARM3(ctx);
#else
	u64 pfn = PT_REGS_PARM1(ctx), nr = PT_REGS_PARM2(ctx);
#endif
	/* The section's memmap goes away: nothing left to read, so no C1 either. */
	c1_update(pfn, pfn + nr, 0);
	return emit_range(ctx, SUBSEC_EV_SPARSE_REMOVE, pfn, nr, 0, 0);
}

/* void remove_pfn_range_from_zone(struct zone *zone, unsigned long start_pfn,
 *                                 unsigned long nr_pages) */
int on_remove_pfn_range(struct pt_regs *ctx)
{
	return emit_range(ctx, SUBSEC_EV_REMOVE_PFN_RANGE, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
			  0, 0);
}

/* The walker probes (PFN readers judged against the windows) follow in
 * subsec_walkers.bpf.c, compiled right after this file (probes/loading.py PARTS). */
