/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Receivers that read a PF_PACKET ring instead of a socket queue: no receive
 * call returns a request, so a request ends when its receiver has seen it.
 * Requests complete at the stack wait, per traced network namespace, for a
 * wake-up of a receiver there; a block ring's requests also wait per client
 * for the send of their response, since a busy block-ring receiver takes
 * retired blocks without polling.
 */
#ifndef __STACKPROF_RINGS_BPF_H
#define __STACKPROF_RINGS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "headers.bpf.h"
#include "filters.bpf.h"
#include "stamps.bpf.h"
#include "flights.bpf.h"
#include "residence.bpf.h"

/* Datagrams written to a packet socket ring, per traced network namespace
 * (the index of its inode in cfg.netns), not yet taken by a receiver woken
 * from poll in that namespace. */
struct ring_pending {
	__u32 head;	/* next to take (the receiver's side) */
	__u32 tail;	/* next free (the stack's side) */
	struct sp_flight_key keys[SP_RING_PENDING];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SP_MAX_NETNS);
	__type(key, __u32);
	__type(value, struct ring_pending);
} ring_pending SEC(".maps");

/* Block-ring receivers only: per client (address, port), its request not yet
 * seen by the receiver. A busy receiver takes retired blocks without polling,
 * so the send of a request's response is the latest its wait can have ended. */
struct ring_client {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, struct ring_client);
	__type(value, struct sp_flight_key);
} ring_waiting SEC(".maps");

/* The ring-pending set of a traced namespace, NULL for others. */
static __always_inline struct ring_pending *ring_of(__u32 netns)
{
	for (__u32 i = 0; i < SP_MAX_NETNS; i++)
		if (cfg.netns[i] && cfg.netns[i] == netns)
			return bpf_map_lookup_elem(&ring_pending, &i);
	return NULL;
}

/* The ring receiver has seen the request of flight f by now. */
static __always_inline void ring_delivered(const struct sp_flight_key *key, struct sp_flight *f,
					   __u64 now)
{
	if (now - arrived(f) > STALE_SEND_NS) {
		miss(SP_MISS_KEY_REUSED);	/* another datagram's flight: see enqueued() */
	} else {
		record_stage(f->path, SP_STAGE_RING_WAIT, f->t_pkt ?: arrived(f), now);
		record_stage(f->path, SP_STAGE_TOTAL, flight_begin(f), now);
		count(f->path, SP_CNT_DELIVERED);
		count(f->path, SP_CNT_RING_DELIVERED);
		if (f->origin == SP_ORIGIN_RECEIVE)
			count(f->path, SP_CNT_RECEIVE_ONLY);
		request_read(key->saddr, f->sport, f->t_rx ?: f->t_stack, f->t_pkt ?: arrived(f), now);
	}
	drop_flight(f);
}

/* A block-ring receiver sends a response (its headers in h, its send call
 * started at t_send): the client's request, if still waiting, was seen. */
static __always_inline void ring_answered(const struct ip_udp *h, __u64 t_send)
{
	struct ring_client client = { .addr = h->ip.daddr, .port = h->dport };
	struct sp_flight_key *key;
	struct sp_flight *f;

	key = bpf_map_lookup_elem(&ring_waiting, &client);
	if (!key)
		return;
	f = lookup_flight(key);
	if (f && f->path == SP_PATH_REQUEST && t_send > f->t_last)
		ring_delivered(key, f, t_send);
	bpf_map_delete_elem(&ring_waiting, &client);
}

/* A request complete at a ring receiver's stack: it waits there for a wake-up. */
static __always_inline void ring_push(const struct sk_buff *skb, const struct sp_flight_key *key,
				      const struct sp_flight *f)
{
	struct ring_pending *pending;
	__u32 slot;

	if (!cfg.ring_receiver || f->path != SP_PATH_REQUEST)
		return;
	pending = ring_of(skb_netns(skb, UNTYPED));
	if (!pending)
		return;
	if (cfg.ring_receiver == SP_RING_BLOCKS) {
		struct ring_client client = { .addr = key->saddr, .port = f->sport };

		if (bpf_map_update_elem(&ring_waiting, &client, key, BPF_ANY))
			miss(SP_MISS_RING_FULL);
	}
	slot = __sync_fetch_and_add(&pending->tail, 1);
	/* SP_RING_PENDING behind: a frame ring's request is not kept (the older
	 * ones stay); a block ring's overwrites the oldest, whose clients still
	 * wait in ring_waiting for the responses that end them. */
	if (slot - pending->head >= SP_RING_PENDING && cfg.ring_receiver == SP_RING_FRAMES) {
		miss(SP_MISS_RING_FULL);
		return;
	}
	pending->keys[slot % SP_RING_PENDING] = *key;
}

static __always_inline void ring_push_head(const struct sk_buff *skb, const struct ip_udp *h,
					   const struct sp_flight *f)
{
	struct sp_flight_key key = {};

	flight_key(h, false, &key);
	ring_push(skb, &key, f);
}

#endif /* __STACKPROF_RINGS_BPF_H */
