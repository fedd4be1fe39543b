/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-thread timestamps: when a traced thread's send or receive call started,
 * and when its send reached ip_do_fragment and ip_finish_output2. They live in
 * arrays indexed by thread id, because an array lookup is inlined by the
 * verifier where a hash lookup is a helper call, on hooks that fire for every
 * send and receive. Also STALE_SEND_NS, the age past which a stamp or a flight
 * belongs to another call or datagram.
 */
#ifndef __STACKPROF_STAMPS_BPF_H
#define __STACKPROF_STAMPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "filters.bpf.h"

#define STALE_SEND_NS 1000000000ULL

/* A thread's timestamp, in the slot its thread id picks. A slot names its
 * thread; two traced threads sharing one take turns (counted as thread_slot). */
struct thread_stamp {
	__u32 tid;
	__u32 pad;
	__u64 t;
};

#define THREAD_STAMPS(name)                                  \
	struct {                                             \
		__uint(type, BPF_MAP_TYPE_ARRAY);            \
		__uint(max_entries, SP_THREAD_ENTRIES);      \
		__type(key, __u32);                          \
		__type(value, struct thread_stamp);          \
	} name SEC(".maps")

_Static_assert((SP_THREAD_ENTRIES & (SP_THREAD_ENTRIES - 1)) == 0, "a power of two");

/* Start of the send and receive calls of traced threads. */
THREAD_STAMPS(send_start);
THREAD_STAMPS(recv_start);

/* Per thread, when the datagram being sent entered ip_do_fragment, and when
 * its first packet entered ip_finish_output2 (neighbour output). */
THREAD_STAMPS(frag_start);
THREAD_STAMPS(output_start);

static __always_inline struct thread_stamp *stamp_slot(void *map, __u32 tid)
{
	__u32 slot = tid & (SP_THREAD_ENTRIES - 1);

	return bpf_map_lookup_elem(map, &slot);
}

/* The stamp of thread tid in map, NULL if it has none. */
static __always_inline __u64 *thread_stamp(void *map, __u32 tid)
{
	struct thread_stamp *s = stamp_slot(map, tid);

	return s && tid && s->tid == tid ? &s->t : NULL;
}

/* Set a thread's stamp, taking its slot from any other thread. */
static __always_inline void put_stamp(void *map, __u32 tid, __u64 now)
{
	struct thread_stamp *s = stamp_slot(map, tid);

	if (!s || !tid)
		return;
	if (s->tid != tid) {
		if (s->tid && now - s->t < STALE_SEND_NS)
			miss(SP_MISS_THREAD_SLOT);
		s->tid = tid;
	}
	s->t = now;
}

/* Stamp the calling thread if the filters let it through. A thread that has
 * a stamp passed them already (they are constants): its check is spared. */
static __always_inline int stamp_thread(void *map)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *stamp = thread_stamp(map, tid);

	if (stamp)
		*stamp = bpf_ktime_get_ns();
	else if (task_traced())
		put_stamp(map, tid, bpf_ktime_get_ns());
	return 0;
}

/* A per-thread stamp taken during the send that started at t_send, else 0. */
static __always_inline __u64 stamp_since(void *map, __u32 tid, __u64 t_send, __u64 now)
{
	__u64 *t = thread_stamp(map, tid);

	return t && *t >= t_send && *t <= now ? *t : 0;
}

/* The send split where fine hooks saw it: UDP and IP up to ip_do_fragment (or
 * to ip_finish_output2 when not fragmented), the fragmenting, then the
 * neighbour output of the first packet up to the device queue. */
static __always_inline void record_send_parts(__u32 path, __u32 tid, __u64 t_send, __u64 now)
{
	__u64 t_frag, t_out;

	if (!cfg.fine_tx)
		return;
	t_frag = stamp_since(&frag_start, tid, t_send, now);
	t_out = stamp_since(&output_start, tid, t_send, now);

	if (t_frag || t_out)
		record_stage(path, SP_STAGE_UDP_IP_TX, t_send, t_frag ?: t_out);
	if (t_frag)
		record_stage(path, SP_STAGE_FRAGMENT, t_frag, t_out ?: now);
	record_stage(path, SP_STAGE_NEIGH_TX, t_out, now);
}

#endif /* __STACKPROF_STAMPS_BPF_H */
