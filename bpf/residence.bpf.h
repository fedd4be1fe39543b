/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Residence: where a request's time goes on one host, with no clock shared
 * between hosts. A request and its response are paired by the client's
 * address and port (the response goes back to the request's source), each
 * host in its own table:
 *
 *   server: request in (first fragment's device receive) -> socket enqueue
 *           -> its receive returns -> the response's send syscall -> the
 *           response's last fragment out (rx_stack, sock_wait, app, tx_stack);
 *   client: request's send syscall -> its last fragment out -> the response's
 *           first fragment in -> enqueue -> receive starts -> returns
 *           (tx_stack, away, rx_stack, sock_wait, recv).
 *
 * One outstanding request per client address and port is remembered (a
 * closed loop, as request/response clients are); a later one replaces it.
 * A client that went away leaves its slot to the next client hashed there.
 */
#ifndef __STACKPROF_RESIDENCE_BPF_H
#define __STACKPROF_RESIDENCE_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "filters.bpf.h"
#include "flights.bpf.h"

#ifndef SP_PAIR_ENTRIES
#define SP_PAIR_ENTRIES 16384
#endif
_Static_assert((SP_PAIR_ENTRIES & (SP_PAIR_ENTRIES - 1)) == 0, "a power of two");

/* A client's slot: its address and port, and its waiting request (t_begin 0:
 * none). An array, one slot per hash of the client: each request costs a few
 * inlined loads and stores (an LRU hash cost a helper call and its locks for
 * every request remembered, on each host). */
struct pair_slot {
	struct sp_pair_key key;
	struct sp_pair p;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SP_PAIR_ENTRIES);
	__type(key, __u32);
	__type(value, struct pair_slot);
} server_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SP_PAIR_ENTRIES);
	__type(key, __u32);
	__type(value, struct pair_slot);
} client_pairs SEC(".maps");

static __always_inline struct pair_slot *pair_slot(void *pairs, __u32 addr, __u16 port)
{
	__u32 index = mix32(addr ^ (__u32)port << 16) & (SP_PAIR_ENTRIES - 1);

	return bpf_map_lookup_elem(pairs, &index);
}

/* Remember client addr:port's request. Another client's request still waiting
 * in the slot (their hashes collide) is replaced: counted as pairs_full. */
static __always_inline void remember(void *pairs, __u32 addr, __u16 port, const struct sp_pair *p)
{
	struct pair_slot *slot = pair_slot(pairs, addr, port);

	if (!slot)
		return;
	if (slot->p.t_begin && (slot->key.addr != addr || slot->key.port != port))
		miss(SP_MISS_PAIRS_FULL);
	slot->p.t_begin = 0;
	slot->key.addr = addr;
	slot->key.port = port;
	slot->p.t_enq = p->t_enq;
	slot->p.t_recv = p->t_recv;
	slot->p.t_begin = p->t_begin;
}

/* The waiting request of a client, taken (NULL: none waits). */
static __always_inline struct sp_pair *take_pair(void *pairs, __u32 addr, __u16 port)
{
	struct pair_slot *slot = pair_slot(pairs, addr, port);

	if (!slot || !slot->p.t_begin || slot->key.addr != addr || slot->key.port != port)
		return NULL;
	return &slot->p;
}

/* Server: a request from client addr:port was read (its receive returned at
 * t_recv; it arrived at t_begin and was queued at t_enq). */
static __always_inline void request_read(__u32 addr, __u16 port, __u64 t_begin, __u64 t_enq,
					 __u64 t_recv)
{
	struct sp_pair p = { .t_begin = t_begin, .t_enq = t_enq, .t_recv = t_recv };

	if (cfg.residence && t_begin)
		remember(&server_pairs, addr, port, &p);
}

/* Server: the last fragment of a response to client addr:port left (its send
 * syscall started at t_send): one residence sample. */
static __always_inline void response_left(__u32 addr, __u16 port, __u64 t_send, __u64 now)
{
	struct sp_pair *p;

	if (!cfg.residence || !(p = take_pair(&server_pairs, addr, port)) || t_send < p->t_recv)
		return;
	record_stage(SP_PATH_SERVER, SP_STAGE_RX_STACK, p->t_begin, p->t_enq);
	record_stage(SP_PATH_SERVER, SP_STAGE_SOCK_WAIT, p->t_enq, p->t_recv);
	record_stage(SP_PATH_SERVER, SP_STAGE_APP, p->t_recv, t_send);
	record_stage(SP_PATH_SERVER, SP_STAGE_TX_STACK, t_send, now);
	record_stage(SP_PATH_SERVER, SP_STAGE_TOTAL, p->t_begin, now);
	count(SP_PATH_SERVER, SP_CNT_DELIVERED);
	p->t_begin = 0;
}

/* Client: the last fragment of a request from addr:port left (its send
 * syscall started at t_send). */
static __always_inline void request_left(__u32 addr, __u16 port, __u64 t_send, __u64 now)
{
	struct sp_pair p = { .t_begin = t_send, .t_recv = now };

	if (cfg.residence && t_send)
		remember(&client_pairs, addr, port, &p);
}

/* Client: a response to addr:port was read: its first fragment arrived at
 * t_in, was queued at t_enq, read from t_read until now. One sample. */
static __always_inline void response_read(__u32 addr, __u16 port, __u64 t_in, __u64 t_enq,
					  __u64 t_read, __u64 now)
{
	struct sp_pair *p;

	if (!cfg.residence || !(p = take_pair(&client_pairs, addr, port)) || t_in < p->t_recv)
		return;
	record_stage(SP_PATH_CLIENT, SP_STAGE_TX_STACK, p->t_begin, p->t_recv);
	record_stage(SP_PATH_CLIENT, SP_STAGE_AWAY, p->t_recv, t_in);
	record_stage(SP_PATH_CLIENT, SP_STAGE_RX_STACK, t_in, t_enq);
	record_stage(SP_PATH_CLIENT, SP_STAGE_SOCK_WAIT, t_enq, t_read);
	record_stage(SP_PATH_CLIENT, SP_STAGE_RECV, t_read, now);
	record_stage(SP_PATH_CLIENT, SP_STAGE_TOTAL, p->t_begin, now);
	count(SP_PATH_CLIENT, SP_CNT_DELIVERED);
	p->t_begin = 0;
}

#endif /* __STACKPROF_RESIDENCE_BPF_H */
