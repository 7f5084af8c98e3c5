// SPDX-License-Identifier: GPL-2.0
/*
 * bad_walker - a deliberately bad PFN walker for subsecinspect's trace tests.
 *
 * A kthread ("bad_walker") loops over [pfn_start, pfn_start + pfn_count) and, the way
 * memory_failure() does for device memory, trusts pfn_valid() + get_dev_pagemap() and then
 * reads the struct page.  It does not ask pgmap_pfn_valid() nor wait for
 * memmap_init_zone_device() to finish, so while a namespace is being created it reads
 * uninitialised struct pages (case 4), and every reserve_pfn read (the altmap reserve of a
 * --map=dev namespace, case 5) reads a struct page that is never initialised.
 *
 * The page is only read while the pgmap reference is held, so memunmap_pages() cannot free
 * the memmap under it (it waits for the reference), and it is read with
 * get_kernel_nofault(): pfn_valid() turns true before the vmemmap is populated.
 *
 * Parameters: pfn_start, pfn_count (the device range), step (PFNs between probes),
 * reserve_pfn (0 = none), reserve_every (loops between reserve reads), delay_us.
 * /sys/module/bad_walker/parameters/reads counts the struct pages read, .../faults the
 * reads that found no memmap mapped yet.
 */
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>

static unsigned long pfn_start;
module_param(pfn_start, ulong, 0444);
static unsigned long pfn_count;
module_param(pfn_count, ulong, 0444);
static unsigned long step = 4096;
module_param(step, ulong, 0444);
static unsigned long reserve_pfn;
module_param(reserve_pfn, ulong, 0444);
static unsigned int reserve_every = 2000;
module_param(reserve_every, uint, 0444);
static unsigned int delay_us = 200;
module_param(delay_us, uint, 0444);
static unsigned long reads;
module_param(reads, ulong, 0444);
static unsigned long faults;
module_param(faults, ulong, 0444);

static struct task_struct *bw_task;
static unsigned long bw_sink;

static struct dev_pagemap *bw_get_dev_pagemap(unsigned long pfn)
{
#ifdef BW_GET_DEV_PAGEMAP_ONE_ARG
	return get_dev_pagemap(pfn);
#else
	return get_dev_pagemap(pfn, NULL);
#endif
}

/* The bad part: no pgmap_pfn_valid(), no notion of "memmap initialised". */
static noinline void bw_read_page(unsigned long pfn)
{
	struct dev_pagemap *pgmap;
	unsigned long flags;

	if (!pfn_valid(pfn))
		return;
	pgmap = bw_get_dev_pagemap(pfn);
	if (!pgmap)
		return;
	/*
	 * The raw flags word (a memdesc_flags_t struct since 6.18).  Read without faulting:
	 * section_activate() sets the subsection bit (pfn_valid() true) BEFORE it populates the
	 * vmemmap, so even the mapping may not be there yet; a plain load oopsed 6.1 here.
	 */
	if (!get_kernel_nofault(flags, (unsigned long *)&pfn_to_page(pfn)->flags)) {
		bw_sink += flags;
		reads++;
	} else {
		faults++;
	}
	put_dev_pagemap(pgmap);
}

static int bw_thread(void *arg)
{
	unsigned int loop = 0;

	while (!kthread_should_stop()) {
		unsigned long pfn;

		for (pfn = pfn_start; pfn < pfn_start + pfn_count; pfn += step)
			bw_read_page(pfn);
		if (reserve_pfn && loop % reserve_every == 0)
			bw_read_page(reserve_pfn);
		loop++;
		usleep_range(delay_us, delay_us + 50);
	}
	return 0;
}

static int __init bw_init(void)
{
	if (!step)
		return -EINVAL;
	bw_task = kthread_run(bw_thread, NULL, "bad_walker");
	return PTR_ERR_OR_ZERO(bw_task);
}

static void __exit bw_exit(void)
{
	kthread_stop(bw_task);
}

module_init(bw_init);
module_exit(bw_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("subsecinspect: a PFN walker that reads uninitialised struct pages (test only)");
