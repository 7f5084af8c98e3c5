/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * subsec_trace.bpf.c - kernel side of `subsecinspect trace` (bcc).
 *
 * Keeps a map of unsafe PFN windows (struct pages that are not initialised:
 * kernel-semantics.md C1, C4, C4b, C5) current from the hotplug lifecycle
 * probes, and checks the PFN of every walker probe against it IN THE KERNEL.
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
 * text); every SUBSEC_* macro below has a default:
 *   SUBSEC_MAX_WINDOWS      window slots (array map)
 *   SUBSEC_MAX_SPAN_SECT    sections one C1 update may span (bounded loop)
 *   SUBSEC_MAX_C1_SECTIONS  C1 sections tracked (hash map)
 *   SUBSEC_ALARM_REPEAT     hits reported per (process, walker, window); the rest counted
 *   SUBSEC_VMEMMAP_SYM      address of the kernel variable vmemmap_base (from
 *                           /proc/kallsyms), 0 = use SUBSEC_VMEMMAP_DEFAULT
 *   SUBSEC_SPARSE_REMOVE_MS sparse_remove_section() takes a struct mem_section *
 *                           first (before "mm/sparse: ..." dropped it, 6.1 and older)
 *   SUBSEC_GDP_ONE_ARG      get_dev_pagemap() takes only the PFN (7.x); both
 *                           forms pass the PFN in the first register, so this only
 *                           documents the build
 *   SUBSEC_FENTRY           also build fentry/fexit programs of the per-PFN walkers
 *                           (bcc supports them and the kernel has BTF + BPF trampolines)
 */
#include <uapi/linux/ptrace.h>
#include <linux/mm_types.h>
#include <linux/mmzone.h>
#include <linux/memremap.h>
#include <linux/ioport.h>

#include "subsec_trace.h"

#ifndef SUBSEC_MAX_WINDOWS
#define SUBSEC_MAX_WINDOWS 64
#endif
#ifndef SUBSEC_MAX_SPAN_SECT
#define SUBSEC_MAX_SPAN_SECT 128
#endif
#ifndef SUBSEC_MAX_C1_SECTIONS
#define SUBSEC_MAX_C1_SECTIONS 8192
#endif
#ifndef SUBSEC_ALARM_REPEAT
#define SUBSEC_ALARM_REPEAT 3
#endif
#ifndef SUBSEC_MAX_RANGES
#define SUBSEC_MAX_RANGES 4
#endif
#ifndef SUBSEC_VMEMMAP_SYM
#define SUBSEC_VMEMMAP_SYM 0
#endif
#ifndef SUBSEC_VMEMMAP_DEFAULT
#define SUBSEC_VMEMMAP_DEFAULT 0xffffea0000000000ULL
#endif
#ifndef SUBSEC_SPARSE_REMOVE_MS
#define SUBSEC_SPARSE_REMOVE_MS 0
#endif
#ifndef SUBSEC_FENTRY
#define SUBSEC_FENTRY 0
#endif

#define SUBSEC_SECT_SHIFT PFN_SECTION_SHIFT

/* --- maps ------------------------------------------------------------ */

/* Window slots; cls == SUBSEC_CLS_NONE marks a free slot. */
BPF_ARRAY(windows, struct subsec_window, SUBSEC_MAX_WINDOWS);
/* Hull of the used slots: the fast path skips the slot scan outside it. */
BPF_ARRAY(bounds, struct subsec_bounds, 1);
/* C1 is per section (memory blocks are whole sections): section nr -> SUBSEC_PH_*. */
BPF_HASH(c1_sections, u64, u32, SUBSEC_MAX_C1_SECTIONS);
/* [lo, hi) of every section ever marked C1 (it only grows): outside it the per-PFN walkers
 * skip the hash lookup, which under TCG costs as much as the rest of the probe. */
struct subsec_hull {
	u64 lo;
	u64 hi;
};
BPF_ARRAY(c1_hull, struct subsec_hull, 1);
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
BPF_PERCPU_ARRAY(stats, u64, SUBSEC_STW_SLOTS);

/* Entry state of lifecycle functions, keyed by thread id (one call per thread). */
struct subsec_entry {
	u64 ts;
	u64 a;        /* pgmap / start pfn */
	u64 b;        /* nr_pages / end */
	u64 c;        /* pgmap / zone index */
};
BPF_HASH(mremap_entry, u64, struct subsec_entry, 1024);
BPF_HASH(mizd_entry, u64, struct subsec_entry, 1024);
BPF_HASH(munmap_entry, u64, struct subsec_entry, 1024);
BPF_HASH(addmem_entry, u64, struct subsec_entry, 1024);
BPF_HASH(move_entry, u64, struct subsec_entry, 1024);
BPF_HASH(online_entry, u64, struct subsec_entry, 1024);
BPF_HASH(offline_entry, u64, struct subsec_entry, 1024);

/* A walker whose verdict depends on its return value: stashed at entry. */
struct subsec_pending {
	u64 pfn;
	u64 win_start;
	u64 win_end;
	u64 owner;
	u32 cls;
	u32 phase;
	s32 kstack;
	u32 walker;
};
/* Keyed by pending_key(walker): get_dev_pagemap() runs nested inside pfn_to_online_page()
 * (collision sections, v5.12+) and must not overwrite its entry. */
BPF_HASH(pending, u64, struct subsec_pending, 4096);

/* --- helpers ---------------------------------------------------------- */

static __always_inline void stat_inc(u32 idx)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		*v += 1;
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

/* Mark the sections of [start, end) C1 with @phase, or clear them (phase 0). */
static __always_inline void c1_update(u64 start, u64 end, u32 phase)
{
	if (end <= start)
		return;
	u64 first = start >> SUBSEC_SECT_SHIFT;
	u64 last = (end - 1) >> SUBSEC_SECT_SHIFT;
	u32 z = 0;
	struct subsec_hull *h = c1_hull.lookup(&z);
	if (h && phase) {
		if (h->hi == 0 || first < h->lo)
			h->lo = first;
		if (last + 1 > h->hi)
			h->hi = last + 1;
	}
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_SPAN_SECT; i++) {
		u64 sec = first + i;
		if (sec > last)
			break;
		if (phase)
			c1_sections.update(&sec, &phase);
		else
			c1_sections.delete(&sec);
	}
}

/* Recompute the hull of the used window slots (after a drop). */
static __always_inline void bounds_recompute(void)
{
	struct subsec_bounds nb = {.lo = ~0ULL};
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		u32 k = i;
		struct subsec_window *w = windows.lookup(&k);
		if (!w || w->cls == SUBSEC_CLS_NONE)
			continue;
		if (w->start_pfn < nb.lo)
			nb.lo = w->start_pfn;
		if (w->end_pfn > nb.hi)
			nb.hi = w->end_pfn;
		nb.nwin++;
	}
	u32 z = 0;
	bounds.update(&z, &nb);
}

static __always_inline void window_add(u64 start, u64 end, u64 owner, u32 cls, u32 phase)
{
	if (end <= start)
		return;
	u32 slot = SUBSEC_MAX_WINDOWS;
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		u32 k = i;
		struct subsec_window *w = windows.lookup(&k);
		if (w && w->cls == SUBSEC_CLS_NONE) {
			slot = i;
			break;
		}
	}
	struct subsec_window *w = windows.lookup(&slot);
	if (!w) {
		stat_inc(SUBSEC_ST_WINDOW_FULL);
		return;
	}
	w->start_pfn = start;
	w->end_pfn = end;
	w->owner = owner;
	w->phase = phase;
	w->cls = cls;
	u32 z = 0;
	struct subsec_bounds *b = bounds.lookup(&z);
	if (b) {
		if (b->nwin == 0 || start < b->lo)
			b->lo = start;
		if (b->nwin == 0 || end > b->hi)
			b->hi = end;
		b->nwin++;
	}
}

/* Drop windows of @owner; cls 0 = any class; pfn != ~0 = only the one containing pfn. */
static __always_inline void window_drop(u64 owner, u32 cls, u64 pfn)
{
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		u32 k = i;
		struct subsec_window *w = windows.lookup(&k);
		if (!w || w->cls == SUBSEC_CLS_NONE || w->owner != owner)
			continue;
		if (cls && w->cls != cls)
			continue;
		if (pfn != ~0ULL && (pfn < w->start_pfn || pfn >= w->end_pfn))
			continue;
		w->cls = SUBSEC_CLS_NONE;
	}
	bounds_recompute();
}

static __always_inline void window_set_phase(u64 owner, u32 cls, u64 pfn, u32 phase)
{
	#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		u32 k = i;
		struct subsec_window *w = windows.lookup(&k);
		if (!w || w->cls != cls || w->owner != owner)
			continue;
		if (pfn >= w->start_pfn && pfn < w->end_pfn)
			w->phase = phase;
	}
}

/* Priority when windows overlap: the permanent reserve first, then teardown. */
static __always_inline u32 cls_prio(u32 cls)
{
	switch (cls) {
	case SUBSEC_CLS_C5: return 4;
	case SUBSEC_CLS_C4B: return 3;
	case SUBSEC_CLS_C4: return 2;
	case SUBSEC_CLS_C1: return 1;
	}
	return 0;
}

/*
 * Is @pfn in an unsafe window?  Fast path: two array lookups (the C1 hull, the window
 * hull); a hash lookup only inside the C1 hull and a slot scan only inside the window
 * hull.  Fills @hit and returns true.
 */
static __always_inline bool window_lookup(u64 pfn, struct subsec_pending *hit)
{
	u64 sec = pfn >> SUBSEC_SECT_SHIFT;
	u32 best = 0;
	u32 z = 0;
	struct subsec_hull *h = c1_hull.lookup(&z);
	u32 *c1 = NULL;
	if (h && sec >= h->lo && sec < h->hi)
		c1 = c1_sections.lookup(&sec);
	if (c1) {
		hit->cls = SUBSEC_CLS_C1;
		hit->phase = *c1;
		hit->win_start = sec << SUBSEC_SECT_SHIFT;
		hit->win_end = (sec + 1) << SUBSEC_SECT_SHIFT;
		hit->owner = 0;
		best = cls_prio(SUBSEC_CLS_C1);
	}
	struct subsec_bounds *b = bounds.lookup(&z);
	if (b && b->nwin && pfn >= b->lo && pfn < b->hi) {
#pragma clang loop unroll(disable)
		for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
			u32 k = i;
			struct subsec_window *w = windows.lookup(&k);
			if (!w || w->cls == SUBSEC_CLS_NONE)
				continue;
			if (pfn < w->start_pfn || pfn >= w->end_pfn)
				continue;
			u32 p = cls_prio(w->cls);
			if (p <= best)
				continue;
			best = p;
			hit->cls = w->cls;
			hit->phase = w->phase;
			hit->win_start = w->start_pfn;
			hit->win_end = w->end_pfn;
			hit->owner = w->owner;
		}
	}
	hit->pfn = pfn;
	return best != 0;
}

/* Does [start, end) intersect a ZONE_DEVICE window (C4/C4b/C5)? */
static __always_inline bool range_hits_device_window(u64 start, u64 end, struct subsec_pending *hit)
{
	#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		u32 k = i;
		struct subsec_window *w = windows.lookup(&k);
		if (!w || w->cls == SUBSEC_CLS_NONE || w->cls == SUBSEC_CLS_C1)
			continue;
		if (end <= w->start_pfn || start >= w->end_pfn)
			continue;
		hit->cls = w->cls;
		hit->phase = w->phase;
		hit->win_start = w->start_pfn;
		hit->win_end = w->end_pfn;
		hit->owner = w->owner;
		hit->pfn = start > w->start_pfn ? start : w->start_pfn;
		return true;
	}
	return false;
}

/* ctx: struct pt_regs * (kprobes) or the u64 argument array (fentry/fexit). */
static __always_inline void emit_walker(void *ctx, struct subsec_pending *hit,
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

static __always_inline u64 page_to_pfn_(u64 page)
{
	u64 base = SUBSEC_VMEMMAP_DEFAULT;
	if (SUBSEC_VMEMMAP_SYM)
		bpf_probe_read_kernel(&base, sizeof(base), (void *)SUBSEC_VMEMMAP_SYM);
	return (page - base) / sizeof(struct page);
}

/* --- ZONE_DEVICE lifecycle: mm/memremap.c, mm/mm_init.c ---------------- */

/* void *memremap_pages(struct dev_pagemap *pgmap, int nid) */
int on_memremap_pages(struct pt_regs *ctx)
{
	struct dev_pagemap *pgmap = (struct dev_pagemap *)PT_REGS_PARM1(ctx);
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {.ts = bpf_ktime_get_ns(), .a = (u64)pgmap};
	mremap_entry.update(&tid, &e);

	int nr_range = 0;
	unsigned int flags = 0;
	int type = 0;
	struct vmem_altmap alt = {};
	bpf_probe_read_kernel(&nr_range, sizeof(nr_range), &pgmap->nr_range);
	bpf_probe_read_kernel(&flags, sizeof(flags), &pgmap->flags);
	bpf_probe_read_kernel(&type, sizeof(type), &pgmap->type);
	bpf_probe_read_kernel(&alt, sizeof(alt), &pgmap->altmap);
	bool has_alt = flags & PGMAP_ALTMAP_VALID;

	#pragma clang loop unroll(disable)
	for (int i = 0; i < SUBSEC_MAX_RANGES; i++) {
		if (i >= nr_range)
			break;
		struct range r = {};
		bpf_probe_read_kernel(&r, sizeof(r), &pgmap->ranges[i]);
		u64 start = r.start >> PAGE_SHIFT, end = (r.end >> PAGE_SHIFT) + 1;
		window_add(start, end, (u64)pgmap, SUBSEC_CLS_C4, SUBSEC_PH_REGISTERED);
		struct subsec_event ev = {};
		ev_init(&ev, SUBSEC_EV_MEMREMAP_ENTER);
		ev.pgmap = (u64)pgmap;
		ev.start_pfn = start;
		ev.nr_pages = end - start;
		ev.arg = i;
		ev.pgmap_type = type;
		ev.pgmap_flags = flags;
		if (has_alt && i == 0) {
			ev.altmap_base = alt.base_pfn;
			ev.altmap_reserve = alt.reserve;
			ev.altmap_free = alt.free;
		}
		emit_lifecycle(ctx, &ev);
	}
	/* The altmap is only allowed on range 0 (pagemap_range() WARNs otherwise). */
	if (has_alt && alt.reserve)
		window_add(alt.base_pfn, alt.base_pfn + alt.reserve, (u64)pgmap, SUBSEC_CLS_C5,
			   SUBSEC_PH_RESERVED);
	return 0;
}

int on_memremap_pages_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = mremap_entry.lookup(&tid);
	if (!e)
		return 0;
	long rc = PT_REGS_RC(ctx);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MEMREMAP_RETURN);
	ev.pgmap = e->a;
	ev.duration_ns = ev.ts_ns - e->ts;
	ev.arg = rc;
	if (rc < 0 && rc >= -4095)  /* IS_ERR(): memunmap_pages() already undid it */
		window_drop(e->a, 0, ~0ULL);
	mremap_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void memmap_init_zone_device(struct zone *zone, unsigned long start_pfn,
 *                              unsigned long nr_pages, struct dev_pagemap *pgmap) */
int on_mizd(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {
		.ts = bpf_ktime_get_ns(),
		.a = PT_REGS_PARM2(ctx),
		.b = PT_REGS_PARM3(ctx),
		.c = PT_REGS_PARM4(ctx),
	};
	mizd_entry.update(&tid, &e);
	window_set_phase(e.c, SUBSEC_CLS_C4, e.a, SUBSEC_PH_MEMMAP_INIT);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MIZD_ENTER);
	ev.pgmap = e.c;
	ev.start_pfn = e.a;
	ev.nr_pages = e.b;
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_mizd_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = mizd_entry.lookup(&tid);
	if (!e)
		return 0;
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MIZD_RETURN);
	ev.pgmap = e->c;
	ev.start_pfn = e->a;
	ev.nr_pages = e->b;
	ev.duration_ns = ev.ts_ns - e->ts;
	/* The data pages of this range are initialised: its C4 window closes. */
	window_drop(e->c, SUBSEC_CLS_C4, e->a);
	mizd_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void memunmap_pages(struct dev_pagemap *pgmap) */
int on_memunmap_pages(struct pt_regs *ctx)
{
	struct dev_pagemap *pgmap = (struct dev_pagemap *)PT_REGS_PARM1(ctx);
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {.ts = bpf_ktime_get_ns(), .a = (u64)pgmap};
	munmap_entry.update(&tid, &e);
	int nr_range = 0;
	int type = 0;
	bpf_probe_read_kernel(&nr_range, sizeof(nr_range), &pgmap->nr_range);
	bpf_probe_read_kernel(&type, sizeof(type), &pgmap->type);
	#pragma clang loop unroll(disable)
	for (int i = 0; i < SUBSEC_MAX_RANGES; i++) {
		if (i >= nr_range)
			break;
		struct range r = {};
		bpf_probe_read_kernel(&r, sizeof(r), &pgmap->ranges[i]);
		u64 start = r.start >> PAGE_SHIFT, end = (r.end >> PAGE_SHIFT) + 1;
		window_add(start, end, (u64)pgmap, SUBSEC_CLS_C4B, SUBSEC_PH_TEARDOWN);
		struct subsec_event ev = {};
		ev_init(&ev, SUBSEC_EV_MEMUNMAP_ENTER);
		ev.pgmap = (u64)pgmap;
		ev.start_pfn = start;
		ev.nr_pages = end - start;
		ev.arg = i;
		ev.pgmap_type = type;
		emit_lifecycle(ctx, &ev);
	}
	return 0;
}

int on_memunmap_pages_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = munmap_entry.lookup(&tid);
	if (!e)
		return 0;
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MEMUNMAP_RETURN);
	ev.pgmap = e->a;
	ev.duration_ns = ev.ts_ns - e->ts;
	window_drop(e->a, 0, ~0ULL);
	munmap_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void move_pfn_range_to_zone(struct zone *zone, unsigned long start_pfn,
 *                             unsigned long nr_pages, struct vmem_altmap *altmap, int mt ...) */
int on_move_pfn_range(struct pt_regs *ctx)
{
	struct zone *zone = (struct zone *)PT_REGS_PARM1(ctx);
	struct pglist_data *pgdat = NULL;
	bpf_probe_read_kernel(&pgdat, sizeof(pgdat), &zone->zone_pgdat);
	u64 zidx = ((u64)zone - (u64)&pgdat->node_zones[0]) / sizeof(struct zone);
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {
		.ts = bpf_ktime_get_ns(),
		.a = PT_REGS_PARM2(ctx),
		.b = PT_REGS_PARM3(ctx),
		.c = zidx,
	};
	move_entry.update(&tid, &e);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MOVE_PFN_RANGE);
	ev.pgmap_type = ZONE_DEVICE;   /* so that user space can tell the zone */
	ev.start_pfn = e.a;
	ev.nr_pages = e.b;
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
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = move_entry.lookup(&tid);
	if (!e)
		return 0;
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_MOVE_PFN_RANGE_RET);
	ev.pgmap_type = ZONE_DEVICE;
	ev.start_pfn = e->a;
	ev.nr_pages = e->b;
	ev.arg = e->c;
	ev.duration_ns = ev.ts_ns - e->ts;
	/* onlining: memmap_init_range() has initialised the memmap (§2.6 step 3) */
	if (e->c != ZONE_DEVICE)
		c1_update(e->a, e->a + e->b, 0);
	move_entry.delete(&tid);
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
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {.ts = bpf_ktime_get_ns(), .a = spfn, .b = epfn - spfn};
	addmem_entry.update(&tid, &e);
	/* Before sparse_add_section(): pfn_valid() turns true inside, memmap garbage. */
	c1_update(spfn, epfn, SUBSEC_PH_HOTADDED);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_ADD_MEMORY);
	ev.start_pfn = spfn;
	ev.nr_pages = epfn - spfn;
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_add_memory_resource_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = addmem_entry.lookup(&tid);
	if (!e)
		return 0;
	long rc = PT_REGS_RC(ctx);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_ADD_MEMORY_RETURN);
	ev.start_pfn = e->a;
	ev.nr_pages = e->b;
	ev.arg = rc;
	ev.duration_ns = ev.ts_ns - e->ts;
	if (rc != 0)
		c1_update(e->a, e->a + e->b, 0);
	addmem_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* add_memory(nid, start, size, ...), __add_memory(...), add_memory_driver_managed(...) */
static __always_inline int add_memory_call(struct pt_regs *ctx, u64 which)
{
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_ADD_MEMORY_CALL);
	ev.start_pfn = PT_REGS_PARM2(ctx) >> PAGE_SHIFT;
	ev.nr_pages = PT_REGS_PARM3(ctx) >> PAGE_SHIFT;
	ev.arg = which;
	emit_lifecycle(ctx, &ev);
	return 0;
}
int on_add_memory(struct pt_regs *ctx) { return add_memory_call(ctx, 1); }
int on___add_memory(struct pt_regs *ctx) { return add_memory_call(ctx, 2); }
int on_add_memory_driver_managed(struct pt_regs *ctx) { return add_memory_call(ctx, 3); }

/* int online_pages(unsigned long pfn, unsigned long nr_pages, struct zone *zone, ...) */
static __always_inline int range_entry(struct pt_regs *ctx, u32 kind)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry e = {
		.ts = bpf_ktime_get_ns(), .a = PT_REGS_PARM1(ctx), .b = PT_REGS_PARM2(ctx)};
	if (kind == SUBSEC_EV_ONLINE_PAGES)
		online_entry.update(&tid, &e);
	else
		offline_entry.update(&tid, &e);
	struct subsec_event ev = {};
	ev_init(&ev, kind);
	ev.start_pfn = e.a;
	ev.nr_pages = e.b;
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_online_pages(struct pt_regs *ctx) { return range_entry(ctx, SUBSEC_EV_ONLINE_PAGES); }
int on_offline_pages(struct pt_regs *ctx) { return range_entry(ctx, SUBSEC_EV_OFFLINE_PAGES); }

int on_online_pages_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = online_entry.lookup(&tid);
	if (!e)
		return 0;
	long rc = PT_REGS_RC(ctx);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_ONLINE_PAGES_RET);
	ev.start_pfn = e->a;
	ev.nr_pages = e->b;
	ev.arg = rc;
	ev.duration_ns = ev.ts_ns - e->ts;
	/* failed onlining: remove_pfn_range_from_zone() made the memmap stale again */
	if (rc != 0)
		c1_update(e->a, e->a + e->b, SUBSEC_PH_HOTADDED);
	online_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

int on_offline_pages_ret(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct subsec_entry *e = offline_entry.lookup(&tid);
	if (!e)
		return 0;
	long rc = PT_REGS_RC(ctx);
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_OFFLINE_PAGES_RET);
	ev.start_pfn = e->a;
	ev.nr_pages = e->b;
	ev.arg = rc;
	ev.duration_ns = ev.ts_ns - e->ts;
	if (rc == 0)
		c1_update(e->a, e->a + e->b, SUBSEC_PH_OFFLINED);
	offline_entry.delete(&tid);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void online_mem_sections(unsigned long start_pfn, unsigned long end_pfn) (and offline_) */
static __always_inline int sections_event(struct pt_regs *ctx, u32 kind)
{
	struct subsec_event ev = {};
	ev_init(&ev, kind);
	ev.start_pfn = PT_REGS_PARM1(ctx);
	ev.nr_pages = PT_REGS_PARM2(ctx) - PT_REGS_PARM1(ctx);
	emit_lifecycle(ctx, &ev);
	return 0;
}
int on_online_mem_sections(struct pt_regs *ctx)
{ return sections_event(ctx, SUBSEC_EV_ONLINE_SECTIONS); }
int on_offline_mem_sections(struct pt_regs *ctx)
{ return sections_event(ctx, SUBSEC_EV_OFFLINE_SECTIONS); }

/* int sparse_add_section(int nid, unsigned long pfn, unsigned long nr_pages,
 *                        struct vmem_altmap *altmap, struct dev_pagemap *pgmap) */
int on_sparse_add_section(struct pt_regs *ctx)
{
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_SPARSE_ADD);
	ev.start_pfn = PT_REGS_PARM2(ctx);
	ev.nr_pages = PT_REGS_PARM3(ctx);
	ev.pgmap = PT_REGS_PARM5(ctx);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void sparse_remove_section([struct mem_section *ms,] unsigned long pfn,
 *                            unsigned long nr_pages, ...) */
int on_sparse_remove_section(struct pt_regs *ctx)
{
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_SPARSE_REMOVE);
#if SUBSEC_SPARSE_REMOVE_MS
	ev.start_pfn = PT_REGS_PARM2(ctx);
	ev.nr_pages = PT_REGS_PARM3(ctx);
#else
	ev.start_pfn = PT_REGS_PARM1(ctx);
	ev.nr_pages = PT_REGS_PARM2(ctx);
#endif
	/* The section's memmap goes away: nothing left to read, so no C1 either. */
	c1_update(ev.start_pfn, ev.start_pfn + ev.nr_pages, 0);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* void remove_pfn_range_from_zone(struct zone *zone, unsigned long start_pfn,
 *                                 unsigned long nr_pages) */
int on_remove_pfn_range(struct pt_regs *ctx)
{
	struct subsec_event ev = {};
	ev_init(&ev, SUBSEC_EV_REMOVE_PFN_RANGE);
	ev.start_pfn = PT_REGS_PARM2(ctx);
	ev.nr_pages = PT_REGS_PARM3(ctx);
	emit_lifecycle(ctx, &ev);
	return 0;
}

/* --- walkers ------------------------------------------------------------ */

static __always_inline u64 pending_key(u32 walker)
{
	return ((u64)walker << 32) | (u32)bpf_get_current_pid_tgid();
}

/* Entry half of a walker judged by its return value: stash the hit if the PFN is unsafe. */
static __always_inline int walker_pending(void *ctx, u64 pfn, u32 walker)
{
	stat_inc(SUBSEC_STW_BASE + walker);
	struct subsec_pending hit = {};
	if (!window_lookup(pfn, &hit))
		return 0;
	stat_inc(SUBSEC_ST_WINDOW_HITS);
	hit.walker = walker;
	hit.kstack = stacks.get_stackid(ctx, 0);
	u64 key = pending_key(walker);
	pending.update(&key, &hit);
	return 0;
}

/* Return half: a non-zero result (masked: a bool is only the low byte) is an alarm. */
static __always_inline int walker_ret(void *ctx, u32 walker, u64 rc)
{
	u64 key = pending_key(walker);
	struct subsec_pending *p = pending.lookup(&key);
	if (!p)
		return 0;
	struct subsec_pending h = *p;
	pending.delete(&key);
	if (rc != 0)
		emit_walker(ctx, &h, walker, SUBSEC_SEV_ALARM, h.kstack, 1);
	return 0;
}

/* Walkers judged at entry (they read the struct page, or check it themselves). */
static __always_inline int walker_entry(void *ctx, u64 pfn, u32 walker, u32 sev)
{
	stat_inc(SUBSEC_STW_BASE + walker);
	struct subsec_pending hit = {};
	if (!window_lookup(pfn, &hit))
		return 0;
	stat_inc(SUBSEC_ST_WINDOW_HITS);
	emit_walker(ctx, &hit, walker, sev, stacks.get_stackid(ctx, 0), 1);
	return 0;
}

/*
 * The kprobe pair of a walker judged by its return value: on_<fn> stashes, on_<fn>_ret
 * judges PT_REGS_RC & mask.  PFN is the PT_REGS_PARMn holding the PFN.
 */
#define SUBSEC_RET_WALKER(fn, walker, PFN, mask)					\
	int on_##fn(struct pt_regs *ctx)						\
	{ return walker_pending(ctx, PFN(ctx), walker); }				\
	int on_##fn##_ret(struct pt_regs *ctx)						\
	{ return walker_ret(ctx, walker, PT_REGS_RC(ctx) & (mask)); }

/* struct page *pfn_to_online_page(unsigned long pfn)  (a function since v5.12) */
SUBSEC_RET_WALKER(pfn_to_online_page, SUBSEC_W_PFN_TO_ONLINE_PAGE, PT_REGS_PARM1, ~0ULL)

/* struct dev_pagemap *get_dev_pagemap(unsigned long pfn[, struct dev_pagemap *pgmap]) */
int on_get_dev_pagemap(struct pt_regs *ctx)
{
	/* Nested in pfn_to_online_page() for the same PFN (collision sections): that one
	 * decides.  (Comparing the PFN also ignores an entry its fexit left behind when the
	 * window closed during the call.) */
	u64 pfn = PT_REGS_PARM1(ctx);
	u64 outer = pending_key(SUBSEC_W_PFN_TO_ONLINE_PAGE);
	struct subsec_pending *o = pending.lookup(&outer);
	if (o && o->pfn == pfn)
		return 0;
	return walker_pending(ctx, pfn, SUBSEC_W_GET_DEV_PAGEMAP);
}
int on_get_dev_pagemap_ret(struct pt_regs *ctx)
{ return walker_ret(ctx, SUBSEC_W_GET_DEV_PAGEMAP, PT_REGS_RC(ctx)); }

/* bool pgmap_pfn_valid(struct dev_pagemap *pgmap, unsigned long pfn) */
SUBSEC_RET_WALKER(pgmap_pfn_valid, SUBSEC_W_PGMAP_PFN_VALID, PT_REGS_PARM2, 0xffULL)

/* int memory_failure(unsigned long pfn, int flags): touches the folio of C4 PFNs */
int on_memory_failure(struct pt_regs *ctx)
{ return walker_entry(ctx, PT_REGS_PARM1(ctx), SUBSEC_W_MEMORY_FAILURE, SUBSEC_SEV_ALARM); }

/* int soft_offline_page(unsigned long pfn, int flags): checks pfn_to_online_page() */
int on_soft_offline_page(struct pt_regs *ctx)
{ return walker_entry(ctx, PT_REGS_PARM1(ctx), SUBSEC_W_SOFT_OFFLINE, SUBSEC_SEV_NOTE); }

/* int unpoison_memory(unsigned long pfn): checks pfn_to_online_page() */
int on_unpoison_memory(struct pt_regs *ctx)
{ return walker_entry(ctx, PT_REGS_PARM1(ctx), SUBSEC_W_UNPOISON, SUBSEC_SEV_NOTE); }

/* static int hwpoison_inject(void *data, u64 val) (mm/hwpoison-inject.c, module):
 * pfn_valid + pfn_to_page without an online check */
int on_hwpoison_inject(struct pt_regs *ctx)
{ return walker_entry(ctx, PT_REGS_PARM2(ctx), SUBSEC_W_HWPOISON_INJECT, SUBSEC_SEV_ALARM); }

/* u64 stable_page_flags(const struct page *page): the struct page is read */
static __always_inline int spf_check(void *ctx, u64 page)
{
	if (!page)
		return 0;
	return walker_entry(ctx, page_to_pfn_(page), SUBSEC_W_STABLE_PAGE_FLAGS, SUBSEC_SEV_ALARM);
}
int on_stable_page_flags(struct pt_regs *ctx) { return spf_check(ctx, PT_REGS_PARM1(ctx)); }

/* void dump_page(const struct page *page, const char *reason) */
int on_dump_page(struct pt_regs *ctx)
{
	u64 page = PT_REGS_PARM1(ctx);
	if (!page)
		return 0;
	return walker_entry(ctx, page_to_pfn_(page), SUBSEC_W_DUMP_PAGE, SUBSEC_SEV_ALARM);
}

#if SUBSEC_FENTRY
/*
 * The per-PFN walkers through BPF trampolines (fentry/fexit, BTF): a direct call instead
 * of an ftrace kprobe plus a kretprobe, which made /proc/kpageflags 5-6x slower under
 * TCG.  Same verdicts as the kprobe handlers; bcc names them kfunc__<fn>/kretfunc__<fn>
 * and the front end attaches one family or the other, never both.
 */
KFUNC_PROBE(pfn_to_online_page, unsigned long pfn)
{ return walker_pending(ctx, pfn, SUBSEC_W_PFN_TO_ONLINE_PAGE); }
KRETFUNC_PROBE(pfn_to_online_page, unsigned long pfn, void *ret)
{
	struct subsec_pending hit = {};
	if (!window_lookup(pfn, &hit))  /* nothing stashed: spare the hash lookup */
		return 0;
	return walker_ret(ctx, SUBSEC_W_PFN_TO_ONLINE_PAGE, (u64)ret);
}

/* The argument is a PTR_TO_BTF_ID for the verifier, which refuses the arithmetic of
 * page_to_pfn_(): read the raw value out of the context as a plain number instead. */
KFUNC_PROBE(stable_page_flags, const void *page_ptr)
{
	u64 page = 0;
	bpf_probe_read_kernel(&page, sizeof(page), &ctx[0]);
	return spf_check(ctx, page);
}
#endif

/*
 * ssize_t kpageflags_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
 * (and kpagecount_read, kpagecgroup_read): the PFN range a reader asks for.  These
 * walkers check each PFN with pfn_to_online_page(), so a ZONE_DEVICE window in the
 * range is only a note; it is what carries the detection where pfn_to_online_page()
 * is a macro (before v5.12).
 */
static __always_inline int kpage_read(struct pt_regs *ctx, u32 walker)
{
	stat_inc(SUBSEC_ST_KPAGE_READS);
	loff_t *ppos = (loff_t *)PT_REGS_PARM4(ctx);
	loff_t pos = 0;
	bpf_probe_read_kernel(&pos, sizeof(pos), ppos);
	u64 first = (u64)pos >> 3, nr = (u64)PT_REGS_PARM3(ctx) >> 3;
	struct subsec_pending hit = {};
	if (!range_hits_device_window(first, first + nr, &hit))
		return 0;
	stat_inc(SUBSEC_ST_WINDOW_HITS);
	emit_walker(ctx, &hit, walker, SUBSEC_SEV_NOTE, stacks.get_stackid(ctx, 0), nr);
	return 0;
}
int on_kpageflags_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGEFLAGS); }
int on_kpagecount_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGECOUNT); }
int on_kpagecgroup_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGECGROUP); }
