/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * subsec_common.h - the unsafe PFN windows, shared by the BPF programs of bpf/.
 *
 * The maps that say which PFNs have a struct page that must not be read (kernel-semantics.md
 * C1, C4, C4b, C5), the helpers that open, close and look up those windows, and the
 * struct page -> PFN conversion.  The window structs and SUBSEC_CLS_* / SUBSEC_PH_* /
 * SUBSEC_ST_* come from the event contract bpf/subsec_trace.h, because user space seeds
 * and reads these maps with the same layout (subsecinspect/probes/windows.py).
 *
 * Compiled as part of the program's main text, never as a real #include: bcc rewrites
 * map calls (windows.lookup(&k) -> bpf_map_lookup_elem(<map fd>, &k)) in the main file
 * only, and a call left in an included header is an indirect call through the table
 * struct that the verifier refuses ("unknown opcode 8d", 6.1).  The front end
 * (subsecinspect/probes/loading.py) therefore compiles this file followed by the
 * program's .bpf.c, both verbatim; the program's own #include of this header is then a
 * no-op (include guard) that documents the dependency.
 *
 * Configuration is passed by the front end as -D flags; every macro has a default:
 *   SUBSEC_MAX_WINDOWS      window slots (array map)
 *   SUBSEC_MAX_SPAN_SECT    sections one C1 update may span (bounded loop)
 *   SUBSEC_MAX_C1_SECTIONS  C1 sections tracked (hash map)
 *   SUBSEC_VMEMMAP_SYM      address of the kernel variable vmemmap_base (from
 *                           /proc/kallsyms), 0 = use SUBSEC_VMEMMAP_DEFAULT
 */
#ifndef SUBSEC_COMMON_H
#define SUBSEC_COMMON_H

#include <uapi/linux/ptrace.h>
#include <linux/mm_types.h>
#include <linux/mmzone.h>

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
#ifndef SUBSEC_VMEMMAP_SYM
#define SUBSEC_VMEMMAP_SYM 0
#endif
#ifndef SUBSEC_VMEMMAP_DEFAULT
#define SUBSEC_VMEMMAP_DEFAULT 0xffffea0000000000ULL
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
/* Per-CPU counters: SUBSEC_ST_* and, from SUBSEC_STW_BASE, one per walker probe. */
BPF_PERCPU_ARRAY(stats, u64, SUBSEC_STW_SLOTS);

/* The window a PFN was found in (window_lookup(), range_hits_device_window()). */
struct subsec_hit {
	u64 pfn;
	u64 win_start;
	u64 win_end;
	u64 owner;
	u32 cls;
	u32 phase;
};

/* --- helpers ---------------------------------------------------------- */

static __always_inline void stat_inc(u32 idx)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		*v += 1;
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

/* Window slot @i if it is in use, else NULL. */
static __always_inline struct subsec_window *used_slot(u32 i)
{
	struct subsec_window *w = windows.lookup(&i);
	return w && w->cls != SUBSEC_CLS_NONE ? w : NULL;
}

/* Recompute the hull of the used window slots (after a drop). */
static __always_inline void bounds_recompute(void)
{
	struct subsec_bounds nb = {.lo = ~0ULL};
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		struct subsec_window *w = used_slot(i);
		if (!w)
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
		struct subsec_window *w = used_slot(i);
		if (!w || w->owner != owner)
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
static __always_inline bool window_lookup(u64 pfn, struct subsec_hit *hit)
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
			struct subsec_window *w = used_slot(i);
			if (!w || pfn < w->start_pfn || pfn >= w->end_pfn)
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
static __always_inline bool range_hits_device_window(u64 start, u64 end, struct subsec_hit *hit)
{
	#pragma clang loop unroll(disable)
	for (u32 i = 0; i < SUBSEC_MAX_WINDOWS; i++) {
		struct subsec_window *w = used_slot(i);
		if (!w || w->cls == SUBSEC_CLS_C1)
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

/* struct page * -> PFN through vmemmap_base (KASLR moves it; the default is the unrandomised
 * x86-64 base). */
static __always_inline u64 page_to_pfn_(u64 page)
{
	u64 base = SUBSEC_VMEMMAP_DEFAULT;
	if (SUBSEC_VMEMMAP_SYM)
		bpf_probe_read_kernel(&base, sizeof(base), (void *)SUBSEC_VMEMMAP_SYM);
	return (page - base) / sizeof(struct page);
}

#endif /* SUBSEC_COMMON_H */
