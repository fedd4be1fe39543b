/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Forced in (clang -include) before stackprof.bpf.c to build stampcount.bpf.o, the same
 * programs that also count every timestamp they take: benchmarks/overhead.py divides
 * the count by the datagrams of a run to get the timestamps stackprof takes per
 * datagram, the multiplier of one timestamp's cost in its design floor. Never loaded
 * by stackprof itself: the count costs an atomic add per timestamp.
 *
 * The macro is function-like, so it leaves bpf_helper_defs.h's declaration of the
 * helper alone (included here first, then skipped by its guard) and replaces only calls
 * written after it; the parenthesised name inside calls the real helper.
 */
#ifndef SP_STAMPCOUNT_BPF_H
#define SP_STAMPCOUNT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* Its own section, so its own mmappable map: stackprof's .bss layout is untouched. */
__u64 sp_stamps_taken SEC(".data.stamps") = 0;

static __always_inline __u64 sp_counted_ktime(void)
{
	__sync_fetch_and_add(&sp_stamps_taken, 1);
	return (bpf_ktime_get_ns)();
}

#define bpf_ktime_get_ns() sp_counted_ktime()

#endif /* SP_STAMPCOUNT_BPF_H */
