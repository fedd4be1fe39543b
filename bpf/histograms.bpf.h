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

/* Add one to element index of a counter array of n elements. The bound is
 * checked on the very register the access uses: the verifier of older kernels
 * (6.1) loses the bounds of a value the compiler spilled and reloaded. */
static __always_inline void bump(__u64 *first, __u64 index, __u64 n)
{
	asm volatile("" : "+r"(index));
	if (index < n)
		__sync_fetch_and_add(first + index, 1);
}

static __always_inline void count(__u32 path, __u32 counter)
{
	if (path < SP_NPATHS && counter < SP_NPATH_COUNTERS)
		bump(&stats.path_counters[0][0], (__u64)path * SP_NPATH_COUNTERS + counter,
		     SP_NPATHS * SP_NPATH_COUNTERS);
}

static __always_inline void miss(__u32 what)
{
	bump(&stats.missed[0], what, SP_NMISS);
}

/* A datagram that never reached its receiver, by cause (enum sp_drop_cause). */
static __always_inline void count_lost(__u32 path, __u32 cause)
{
	if (path < SP_NPATHS && cause < SP_NDROP_CAUSES)
		bump(&stats.lost[0][0], (__u64)path * SP_NDROP_CAUSES + cause,
		     SP_NPATHS * SP_NDROP_CAUSES);
}

/* A fragment of a followed datagram dropped, by cause. */
static __always_inline void count_frag_dropped(__u32 path, __u32 cause)
{
	if (path < SP_NPATHS && cause < SP_NDROP_CAUSES)
		bump(&stats.frags_dropped[0][0], (__u64)path * SP_NDROP_CAUSES + cause,
		     SP_NPATHS * SP_NDROP_CAUSES);
}

#define SP_OUT_OF_RANGE() miss(SP_MISS_OUT_OF_RANGE)
#include "buckets.h"

#define SP_NHISTS (SP_NPATHS * (SP_NSTAGES + SP_NEXTRA_HISTS))

/* One value into its histogram's bucket and into its histogram's exact sum.
 * A global function, so the verifier checks it once, on its own, for any
 * arguments: inlined at each of its call sites it multiplied the states of
 * the programs that record many stages (the receive return's took 0.28 s of
 * a 0.4 s load, most of stackprof's start). */
__noinline int record_value(__u32 path, __u32 column, __u64 value)
{
	__u64 row = (__u64)(path * (SP_NSTAGES + SP_NEXTRA_HISTS) + column);
	__u64 slot = row * SP_NBUCKETS + bucket_of(value);

	/* Keep the bound check on the value the access uses. */
	asm volatile("" : "+r"(slot));
	if (slot >= (__u64)SP_NHISTS * SP_NBUCKETS)
		return 0;
	__sync_fetch_and_add(&stats.hist[0][0] + slot, 1);
	asm volatile("" : "+r"(row));
	if (row < SP_NHISTS)
		__sync_fetch_and_add(&stats.sum[0] + row, value);
	return 0;
}

/* Record the stage that ends now, if its start was seen. */
static __always_inline void record_stage(__u32 path, __u32 stage, __u64 start, __u64 now)
{
	if (!start)
		return;
	record_value(path, stage, now > start ? now - start : 0);
}

#endif /* __STACKPROF_HISTOGRAMS_BPF_H */
