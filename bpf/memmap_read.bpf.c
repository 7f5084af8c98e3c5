// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * memmap_read: copy kernel virtual memory that /proc/kcore cannot serve into a map.
 *
 * /proc/kcore registers the vmemmap of System RAM only (fs/proc/kcore.c,
 * get_sparsemem_vmemmap_info()), so the struct pages that a --map=dev namespace keeps on
 * the device itself (the vmem_altmap) cannot be read through it. bpf_probe_read_kernel()
 * can: it reads any kernel virtual address and fails cleanly where nothing is mapped.
 *
 * A raw tracepoint program that is never attached: the front end
 * (subsecinspect/probes/memmap_read.py) writes a request into memmap_req[0] and runs the
 * program with BPF_PROG_TEST_RUN, so it runs only when asked, in the asking process, and
 * nothing stays attached to the kernel. The request/response layout is bpf/memmap_read.h.
 */
#include "memmap_read.h"

BPF_ARRAY(memmap_req, struct memmap_read_req, 1);
BPF_ARRAY(memmap_block, struct memmap_read_block, 1);

int memmap_read(void *ctx)
{
	int zero = 0;
	struct memmap_read_req *req;
	struct memmap_read_block *blk;
	__u64 addr;
	__u32 n;

	req = memmap_req.lookup(&zero);
	blk = memmap_block.lookup(&zero);
	if (!req || !blk)
		return 1;
	addr = req->addr;
	n = req->nchunks;
#pragma unroll
	for (int i = 0; i < MEMMAP_READ_CHUNKS; i++) {
		if (i < n)
			blk->rc[i] = bpf_probe_read_kernel(&blk->data[i * MEMMAP_READ_CHUNK],
							   MEMMAP_READ_CHUNK,
							   (void *)(addr + (__u64)i * MEMMAP_READ_CHUNK));
		else
			blk->rc[i] = MEMMAP_READ_NOT_ASKED;
	}
	blk->seq = req->seq;
	return 0;
}
