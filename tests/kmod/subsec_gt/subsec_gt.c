// SPDX-License-Identifier: GPL-2.0
/*
 * subsec_gt - ground truth for subsecinspect's lab tests: ask the running kernel's own
 * predicates about a list of PFNs.
 *
 * debugfs interface (/sys/kernel/debug/subsec_gt/pfns):
 *   write: PFNs separated by white space (decimal or 0x-hex).  Opening with O_TRUNC clears
 *          the list, every write() appends; a write() must end on a token boundary.
 *   read:  one line per PFN, recomputed at read time, space-separated key=value pairs:
 *     pfn=0x...             the PFN
 *     valid=0|1             pfn_valid()
 *     online=0|1            pfn_to_online_page() != NULL
 *     pgmap=0x...|-         get_dev_pagemap() (the reference is put back at once)
 *     pgmap_pfn_valid=0|1|- pgmap_pfn_valid() (5.12+; "-" without a pgmap or where the kernel
 *                           has no such function)
 *     zone=NAME|- zone_idx=N|- nid=N|-   from the struct page, only where the kernel considers it
 *                           initialised: pfn_to_online_page() != NULL, or a pgmap for which
 *                           pgmap_pfn_valid() is true (on kernels without pgmap_pfn_valid the
 *                           same test is done here: pfn >= range start + vmem_altmap_offset())
 *     page_pgmap=0x...|-    the pgmap recorded in the (head) struct page of a ZONE_DEVICE page
 *     dev_pagemap=0x...|-   get_dev_pagemap() asked whatever pfn_valid() says (xa_load + tryget
 *                           is safe for any PFN; the audit's get_dev_pagemap question)
 *     dev_pgmap_pfn_valid=0|1|-  pgmap_pfn_valid() for that pgmap ("-" as above)
 *   The first line is a header "subsec_gt v2 release=<uts release> pgmap_pfn_valid=<how>".
 *
 * /sys/kernel/debug/subsec_gt/memstate: the same PFN list (written through "pfns"), what the
 * kernel records for hot-added RAM (virtio-mem, memmap_on_memory), one line per PFN:
 *     pfn=0x...  online=0|1        pfn_to_online_page() != NULL
 *     zone=NAME|-                  page_zone(), only for an online page
 *     offline=0|1|-                PageOffline() of an online page (the kernel's own test)
 *     self_hosted=0|1|-            PageVmemmapSelfHosted() (6.1+; "-" where it does not exist
 *                                  or the page is not online)
 *     reserved=0|1|-  page_type=0x...|-   PageReserved() and the raw page->page_type word
 *   Header: "subsec_gt memstate v1 self_hosted=kernel|absent".
 */
#include <linux/debugfs.h>
#include <linux/kprobes.h>
#include <linux/memory_hotplug.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/utsname.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

#define SUBSEC_GT_MAX_PFNS 65536

static DEFINE_MUTEX(gt_lock);
static unsigned long *gt_pfns;
static unsigned int gt_nr;
static struct dentry *gt_dir;

/*
 * pgmap_pfn_valid() appeared in v5.12 (34dc45be4563 "mm: fix memory_failure() handling of
 * dax-namespace metadata") and was backported to 5.10.y.  It is not exported to modules, so its address is looked up at
 * load time through a kprobe registration (kallsyms_lookup_name() is not exported either).
 */
typedef bool (*pgmap_pfn_valid_fn)(struct dev_pagemap *pgmap, unsigned long pfn);
static pgmap_pfn_valid_fn gt_pgmap_pfn_valid;

static void *gt_lookup_symbol(const char *name)
{
	struct kprobe kp = { .symbol_name = name };
	unsigned long addr;

	if (register_kprobe(&kp) < 0)
		return NULL;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
#ifdef CONFIG_X86_KERNEL_IBT
	/* With IBT the probe sits after the function's ENDBR64; an indirect call must hit it. */
	if (*(u32 *)(addr - 4) == 0xfa1e0ff3)
		addr -= 4;
#endif
	return (void *)addr;
}

/* range start + vmem_altmap_offset() for range 0: pfn_first() of mm/memremap.c, mirrored. */
static bool gt_pfn_past_altmap(struct dev_pagemap *pgmap, unsigned long pfn)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 10, 0)
	unsigned long first = PHYS_PFN(pgmap->ranges[0].start);

	if (pfn > PHYS_PFN(pgmap->ranges[0].end) || pfn < first)
		return true; /* another range: no altmap offset */
#else
	unsigned long first = PHYS_PFN(pgmap->res.start);
#endif
	/* vmem_altmap_offset() (not exported): reserve + free */
	if (pgmap->flags & PGMAP_ALTMAP_VALID)
		first += pgmap->altmap.reserve + pgmap->altmap.free;
	return pfn >= first;
}

static struct dev_pagemap *gt_page_pgmap(struct page *page)
{
#ifdef GT_HAVE_PAGE_PGMAP
	return page_pgmap(page);
#else
	return compound_head(page)->pgmap;
#endif
}

#ifdef GT_GET_DEV_PAGEMAP_ONE_ARG
#define gt_get_dev_pagemap(pfn) get_dev_pagemap(pfn)
#else
#define gt_get_dev_pagemap(pfn) get_dev_pagemap(pfn, NULL)
#endif

/* get_dev_pagemap() without the pfn_valid() guard that memory_failure() puts before it. */
static void gt_show_any_pgmap(struct seq_file *m, unsigned long pfn)
{
	struct dev_pagemap *pgmap = gt_get_dev_pagemap(pfn);

	if (!pgmap) {
		seq_puts(m, " dev_pagemap=- dev_pgmap_pfn_valid=-");
		return;
	}
	seq_printf(m, " dev_pagemap=0x%px", pgmap);
	if (gt_pgmap_pfn_valid)
		seq_printf(m, " dev_pgmap_pfn_valid=%d", gt_pgmap_pfn_valid(pgmap, pfn));
	else
		seq_puts(m, " dev_pgmap_pfn_valid=-");
	put_dev_pagemap(pgmap);
}

static void gt_show_pfn(struct seq_file *m, unsigned long pfn)
{
	struct dev_pagemap *pgmap;
	struct page *page = NULL;
	int valid, pvalid = -1;

	valid = pfn_valid(pfn);
	seq_printf(m, "pfn=0x%lx valid=%d", pfn, valid);
	seq_printf(m, " online=%d", pfn_to_online_page(pfn) != NULL);
	pgmap = valid ? gt_get_dev_pagemap(pfn) : NULL;
	if (pgmap) {
		seq_printf(m, " pgmap=0x%px", pgmap);
		if (gt_pgmap_pfn_valid) {
			pvalid = gt_pgmap_pfn_valid(pgmap, pfn);
			seq_printf(m, " pgmap_pfn_valid=%d", pvalid);
		} else {
			pvalid = gt_pfn_past_altmap(pgmap, pfn);
			seq_puts(m, " pgmap_pfn_valid=-");
		}
	} else {
		seq_puts(m, " pgmap=- pgmap_pfn_valid=-");
	}

	if (pfn_to_online_page(pfn))
		page = pfn_to_page(pfn);
	else if (pgmap && pvalid > 0)
		page = pfn_to_page(pfn);
	if (page) {
		seq_printf(m, " zone=%s zone_idx=%d nid=%d", page_zone(page)->name,
			   page_zonenum(page), page_to_nid(page));
		if (is_zone_device_page(page))
			seq_printf(m, " page_pgmap=0x%px", gt_page_pgmap(page));
		else
			seq_puts(m, " page_pgmap=-");
	} else {
		seq_puts(m, " zone=- zone_idx=- nid=- page_pgmap=-");
	}
	if (pgmap)
		put_dev_pagemap(pgmap);
	gt_show_any_pgmap(m, pfn);
	seq_putc(m, '\n');
}

static int gt_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&gt_lock);
	seq_printf(m, "subsec_gt v2 release=%s pgmap_pfn_valid=%s\n", utsname()->release,
		   gt_pgmap_pfn_valid ? "kernel" : "mirrored");
	for (i = 0; i < gt_nr; i++)
		gt_show_pfn(m, gt_pfns[i]);
	mutex_unlock(&gt_lock);
	return 0;
}

static int gt_open(struct inode *inode, struct file *file)
{
	if ((file->f_mode & FMODE_WRITE) && (file->f_flags & O_TRUNC)) {
		mutex_lock(&gt_lock);
		gt_nr = 0;
		mutex_unlock(&gt_lock);
	}
	if (!(file->f_mode & FMODE_READ))
		return 0;
	return single_open_size(file, gt_show, NULL, 4096 + 160 * (size_t)gt_nr);
}

static int gt_release(struct inode *inode, struct file *file)
{
	if (!(file->f_mode & FMODE_READ))
		return 0;
	return single_release(inode, file);
}

static ssize_t gt_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char *buf, *p, *tok;
	unsigned long pfn;
	ssize_t ret = len;

	if (len > (1 << 20))
		return -E2BIG;
	buf = memdup_user_nul(ubuf, len);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	mutex_lock(&gt_lock);
	p = buf;
	while ((tok = strsep(&p, " \t\n,")) != NULL) {
		if (!*tok)
			continue;
		if (kstrtoul(tok, 0, &pfn)) {
			ret = -EINVAL;
			break;
		}
		if (gt_nr >= SUBSEC_GT_MAX_PFNS) {
			ret = -ENOSPC;
			break;
		}
		gt_pfns[gt_nr++] = pfn;
	}
	mutex_unlock(&gt_lock);
	kfree(buf);
	return ret;
}

static ssize_t gt_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	if (!(file->f_mode & FMODE_READ))
		return -EBADF;
	return seq_read(file, ubuf, len, ppos);
}

static const struct file_operations gt_fops = {
	.owner = THIS_MODULE,
	.open = gt_open,
	.read = gt_read,
	.write = gt_write,
	.release = gt_release,
};

/* --- memstate: hot-added RAM as the kernel records it (separate from the predicates) --- */

static void gt_memstate_pfn(struct seq_file *m, unsigned long pfn)
{
	struct page *page = pfn_to_online_page(pfn);

	seq_printf(m, "pfn=0x%lx online=%d", pfn, page != NULL);
	if (!page) {
		seq_puts(m, " zone=- offline=- self_hosted=- reserved=- page_type=-\n");
		return;
	}
	seq_printf(m, " zone=%s offline=%d", page_zone(page)->name, !!PageOffline(page));
#ifdef GT_HAVE_VMEMMAP_SELF_HOSTED
	seq_printf(m, " self_hosted=%d", !!PageVmemmapSelfHosted(page));
#else
	seq_puts(m, " self_hosted=-");
#endif
	seq_printf(m, " reserved=%d page_type=0x%x\n", !!PageReserved(page),
		   READ_ONCE(page->page_type));
}

static int gt_memstate_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&gt_lock);
#ifdef GT_HAVE_VMEMMAP_SELF_HOSTED
	seq_puts(m, "subsec_gt memstate v1 self_hosted=kernel\n");
#else
	seq_puts(m, "subsec_gt memstate v1 self_hosted=absent\n");
#endif
	for (i = 0; i < gt_nr; i++)
		gt_memstate_pfn(m, gt_pfns[i]);
	mutex_unlock(&gt_lock);
	return 0;
}

/* gt_memstate_fops: seq_file's own buffer growth, no size hint needed (since v4.16). */
DEFINE_SHOW_ATTRIBUTE(gt_memstate);

static int __init subsec_gt_init(void)
{
	gt_pfns = vmalloc(array_size(SUBSEC_GT_MAX_PFNS, sizeof(*gt_pfns)));
	if (!gt_pfns)
		return -ENOMEM;
	/* Looked up, not version-tested: stable 5.10.y has it too (backported with the fix). */
	gt_pgmap_pfn_valid = gt_lookup_symbol("pgmap_pfn_valid");
	gt_dir = debugfs_create_dir("subsec_gt", NULL);
	debugfs_create_file("pfns", 0600, gt_dir, NULL, &gt_fops);
	debugfs_create_file("memstate", 0400, gt_dir, NULL, &gt_memstate_fops);
	return 0;
}

static void __exit subsec_gt_exit(void)
{
	debugfs_remove_recursive(gt_dir);
	vfree(gt_pfns);
}

module_init(subsec_gt_init);
module_exit(subsec_gt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("subsecinspect lab: the kernel's own answers for a list of PFNs");
