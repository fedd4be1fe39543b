/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Everything user space reads: the one mmapped global (stats) of per-path
 * counters, misses and log-linear histograms, and the helpers that add to it.
 * All aggregation happens here, in the kernel, so that no per-packet event
 * reaches user space; the bucket maths itself is in buckets.h, shared with a
 * user-space test.
 */
#ifndef __STACKPROF_HISTOGRAMS_BPF_H
#define __STACKPROF_HISTOGRAMS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stackprof.h"

struct sp_stats stats = {};

static __always_inline void count(__u32 path, __u32 counter)
{
	if (path < SP_NPATHS && counter < SP_NPATH_COUNTERS)
		__sync_fetch_and_add(&stats.path_counters[path][counter], 1);
}

static __always_inline void miss(__u32 what)
{
	if (what < SP_NMISS)
		__sync_fetch_and_add(&stats.missed[what], 1);
}

#define SP_OUT_OF_RANGE() miss(SP_MISS_OUT_OF_RANGE)
#include "buckets.h"

#define SP_NHISTS (SP_NPATHS * (SP_NSTAGES + SP_NEXTRA_HISTS))

static __always_inline void record_value(__u32 path, __u32 column, __u64 value)
{
	__u64 slot = (__u64)(path * (SP_NSTAGES + SP_NEXTRA_HISTS) + column) * SP_NBUCKETS +
		     bucket_of(value);

	/* Keep the bound check on the value the access uses. */
	asm volatile("" : "+r"(slot));
	if (slot >= (__u64)SP_NHISTS * SP_NBUCKETS)
		return;
	__sync_fetch_and_add(&stats.hist[0][0] + slot, 1);
}

/* Record the stage that ends now, if its start was seen. */
static __always_inline void record_stage(__u32 path, __u32 stage, __u64 start, __u64 now)
{
	if (!start)
		return;
	record_value(path, stage, now > start ? now - start : 0);
}

#endif /* __STACKPROF_HISTOGRAMS_BPF_H */
