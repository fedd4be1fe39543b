/* SPDX-License-Identifier: GPL-2.0 */
/*
 * --detail lean: only the send, the first fragment's queueing, the stack entry,
 * the socket enqueue and the receive return are hooked (profiler/hooks.py's
 * LEAN_BOUNDARIES), the hook events that carry most of a datagram's time. A
 * stage across a boundary lean leaves unhooked is recorded merged, under a name
 * of its own, and only where that boundary's stamp is absent: to_stack (first
 * fragment queued -> its stack entry: qdisc, driver and backlog) and sock_recv
 * (socket enqueue -> receive returns: sock_wait and recv). cfg.lean is rodata:
 * in a full run the verifier prunes all of it away.
 */
#ifndef __STACKPROF_LEAN_BPF_H
#define __STACKPROF_LEAN_BPF_H

#include "vmlinux.h"
#include "stackprof.h"
#include "histograms.bpf.h"
#include "filters.bpf.h"

/* The first fragment of flight f entered the stack, no device receive seen. */
static __always_inline void lean_to_stack(const struct sp_flight *f)
{
	if (cfg.lean && !f->t_rx)
		record_stage(f->path, SP_STAGE_TO_STACK, f->t_queue, f->t_stack);
}

/* A receive returned the datagram queued since wait_from: its wait, from then to
 * start (the receive call's entry, when entered), and the receive, to now; lean,
 * with no entry stamp, the two as one. */
static __always_inline void record_sock_recv(__u32 path, bool entered, __u64 wait_from,
					     __u64 start, __u64 now)
{
	if (cfg.lean && !entered) {
		record_stage(path, SP_STAGE_SOCK_RECV, wait_from, now);
		return;
	}
	record_stage(path, SP_STAGE_SOCK_WAIT, wait_from, start);
	record_stage(path, SP_STAGE_RECV, start, now);
}

#endif /* __STACKPROF_LEAN_BPF_H */
