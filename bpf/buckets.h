/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Log-linear bucket maths, plain C: the BPF programs (through
 * histograms.bpf.h) and a user-space C compiler (tests/bucket_check.c, which
 * checks it against profiler/buckets.py) build this same text. It needs only
 * the __u32/__u64 types and the SP_* constants of stackprof.h. A value past the
 * range calls SP_OUT_OF_RANGE(), which the includer may define (the BPF side
 * counts it as a miss); it does nothing by default.
 */
#ifndef __STACKPROF_BUCKETS_H
#define __STACKPROF_BUCKETS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif
#include "stackprof.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#ifndef SP_OUT_OF_RANGE
#define SP_OUT_OF_RANGE() do {} while (0)
#endif

/* The index of v's highest set bit (0 for 0 and 1), without a loop. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* Same maths as profiler/buckets.py: exact below 64 ns, 64 per octave above. */
static __always_inline __u32 bucket_of(__u64 v)
{
	__u32 exp;

	if (v < SP_SUB_BUCKETS)
		return v;
	exp = log2_u64(v);
	if (exp >= SP_MAX_EXP) {
		SP_OUT_OF_RANGE();
		return SP_NBUCKETS - 1;
	}
	return SP_SUB_BUCKETS + (exp - SP_SUB_BITS) * SP_SUB_BUCKETS +
	       ((v >> (exp - SP_SUB_BITS)) & (SP_SUB_BUCKETS - 1));
}

#endif /* __STACKPROF_BUCKETS_H */
