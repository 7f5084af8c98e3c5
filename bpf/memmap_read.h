/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The contract between bpf/memmap_read.bpf.c and subsecinspect/probes/memmap_read.py
 * (parsed by tests/unit/test_probes_memmap_read.py; keep both sides in step).
 *
 * User space writes one request into memmap_req[0] and runs the program
 * (BPF_PROG_TEST_RUN); it copies up to MEMMAP_READ_CHUNKS chunks of MEMMAP_READ_CHUNK bytes
 * from the requested kernel virtual address into memmap_block[0], with one return code of
 * bpf_probe_read_kernel() per chunk: the helper zeroes its destination on a fault, so the
 * codes are what tells a fault from zeros.
 */
#ifndef SUBSEC_MEMMAP_READ_H
#define SUBSEC_MEMMAP_READ_H

/* One page: the verifier accepts a constant-size read into a map value. */
#define MEMMAP_READ_CHUNK 4096
/* Chunks per request: 256 KiB, the block the front end caches. */
#define MEMMAP_READ_CHUNKS 64
/* rc[] of a chunk beyond the request's nchunks. */
#define MEMMAP_READ_NOT_ASKED 1

struct memmap_read_req {
	__u64 addr;     /* kernel virtual address, MEMMAP_READ_CHUNK aligned */
	__u32 nchunks;  /* 1..MEMMAP_READ_CHUNKS */
	__u32 seq;      /* echoed in memmap_read_block.seq: the program ran for this request */
};

struct memmap_read_block {
	__s32 rc[MEMMAP_READ_CHUNKS];  /* 0, or -errno of bpf_probe_read_kernel() */
	__u32 seq;
	__u32 pad;
	__u8 data[MEMMAP_READ_CHUNKS * MEMMAP_READ_CHUNK];
};

#endif /* SUBSEC_MEMMAP_READ_H */
