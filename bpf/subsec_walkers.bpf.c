/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * subsec_walkers.bpf.c - the walker probes of `subsecinspect trace` (bcc).
 *
 * The second half of the tracer's program: bcc compiles subsec_common.h,
 * subsec_trace.bpf.c (lifecycle probes, the stacks and pending maps, the emit helpers)
 * and this file as one text (subsecinspect/probes/loading.py PARTS; bcc rewrites map
 * calls only in its main text, so these are concatenated, not #include'd). Each probe
 * looks up the PFN a walker is handed in the windows kept by the lifecycle probes and
 * reports a hit only inside one.
 */
/* No #include: the maps and helpers used here are defined earlier in the same text. */

/* --- walkers ------------------------------------------------------------ */

/* Entry half of a walker judged by its return value: stash the hit if the PFN is unsafe. */
static __always_inline int walker_pending(void *ctx, u64 pfn, u32 walker)
{
	stat_inc(SUBSEC_STW_BASE + walker);
	struct subsec_pending p = {};
	if (!window_lookup(pfn, &p.hit))
		return 0;
	stat_inc(SUBSEC_ST_WINDOW_HITS);
	p.walker = walker;
	p.kstack = stacks.get_stackid(ctx, 0);
	u64 key = tid_key(walker);
	pending.update(&key, &p);
	return 0;
}

/* Return half: a non-zero result (masked: a bool is only the low byte) is an alarm. */
static __always_inline int walker_ret(void *ctx, u32 walker, u64 rc)
{
	u64 key = tid_key(walker);
	struct subsec_pending *p = pending.lookup(&key);
	if (!p)
		return 0;
	struct subsec_pending h = *p;
	pending.delete(&key);
	if (rc != 0)
		emit_walker(ctx, &h.hit, walker, SUBSEC_SEV_ALARM, h.kstack, 1);
	return 0;
}

/* Walkers judged at entry (they read the struct page, or check it themselves). */
static __always_inline int walker_entry(void *ctx, u64 pfn, u32 walker, u32 sev)
{
	stat_inc(SUBSEC_STW_BASE + walker);
	struct subsec_hit hit = {};
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
	u64 outer = tid_key(SUBSEC_W_PFN_TO_ONLINE_PAGE);
	struct subsec_pending *o = pending.lookup(&outer);
	if (o && o->hit.pfn == pfn)
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
 * of an ftrace kprobe plus a kretprobe, the costlier of the two (README "Performance",
 * measured by scripts/bench_trace.py).  Same verdicts as the kprobe handlers; bcc names them kfunc__<fn>/kretfunc__<fn>
 * and the front end attaches one family or the other, never both.
 */
KFUNC_PROBE(pfn_to_online_page, unsigned long pfn)
{ return walker_pending(ctx, pfn, SUBSEC_W_PFN_TO_ONLINE_PAGE); }
KRETFUNC_PROBE(pfn_to_online_page, unsigned long pfn, void *ret)
{
	struct subsec_hit hit = {};
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
	struct subsec_hit hit = {};
	if (!range_hits_device_window(first, first + nr, &hit))
		return 0;
	stat_inc(SUBSEC_ST_WINDOW_HITS);
	emit_walker(ctx, &hit, walker, SUBSEC_SEV_NOTE, stacks.get_stackid(ctx, 0), nr);
	return 0;
}
int on_kpageflags_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGEFLAGS); }
int on_kpagecount_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGECOUNT); }
int on_kpagecgroup_read(struct pt_regs *ctx) { return kpage_read(ctx, SUBSEC_W_KPAGECGROUP); }
