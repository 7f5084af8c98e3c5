// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * memmap_read: copy kernel virtual memory that /proc/kcore cannot serve into a map.
 *
 * /proc/kcore registers the vmemmap of System RAM only (fs/proc/kcore.c,
 * get_sparsemem_vmemmap_info()), so the struct pages that a --map=dev namespace keeps on
 * the device itself (the vmem_altmap) cannot be read through it. bpf_probe_read_kernel()
 * can: it reads any kernel virtual address and fails cleanly where nothing is mapped.
 * The front end (subsecinspect/probes/memmap_read.py) asks for one block at a time; the
 * request/response layout is bpf/memmap_read.h.
 *
 * Settings (cflags): -DREADER_TGID=<pid> of the reading process.
 */
#include <linux/sched.h>
#include "memmap_read.h"

#ifndef READER_TGID
#error "READER_TGID must be set (-DREADER_TGID=<pid>)"
#endif

BPF_ARRAY(memmap_req, struct memmap_read_req, 1);
BPF_ARRAY(memmap_block, struct memmap_read_block, 1);

/*
 * The trigger: getppid() of the reader. A syscall tracepoint needs neither kprobes nor
 * ctypes, and getppid() has no side effect; other processes return at the first test.
 */
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
	int zero = 0;
	struct memmap_read_req *req;
	struct memmap_read_block *blk;
	__u64 addr;
	__u32 n;

	if ((bpf_get_current_pid_tgid() >> 32) != READER_TGID)
		return 0;
	req = memmap_req.lookup(&zero);
	blk = memmap_block.lookup(&zero);
	if (!req || !blk)
		return 0;
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
