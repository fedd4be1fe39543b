/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Pairing a receive with the datagram it returned. A socket's queue is FIFO,
 * so each traced socket remembers the key of the datagram at the head of its
 * queues: the next receive return on that socket is that datagram's. TCP is
 * read by bytes, so a stream remembers its head segment and where it ends.
 * The head lives in the socket's own storage where every program reaching
 * the socket has it typed, else in a hash by socket address.
 *
 * Why a head at all: no tracepoint in a UDP read carries the datagram.
 * sock_recv_length has only the socket; skb_copy_datagram_iovec does not fire
 * for UDP; and the read's consume_skb fires later, in softirq from
 * skb_defer_free_flush (measured on 6.18 with tracefs stack traces, even with
 * reader and sender on one CPU).
 */
#ifndef __STACKPROF_SOCKQ_BPF_H
#define __STACKPROF_SOCKQ_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "stackprof.h"
#include "headers.bpf.h"
#include "filters.bpf.h"
#include "flights.bpf.h"
#include "sampling.bpf.h"

#define AF_INET 2

/* Per destination port, the datagrams that last arrived whole at the stack
 * (unfragmented, or at their last fragment), oldest first from next: what a
 * receive took when the kernel let the reader dequeue it before anything saw
 * it queued (no head noted for the socket, or one noted late, after that
 * read). It exists for 6.18 (commit b650bf0977d3, "udp: remove busylock and
 * add per NUMA queues"): producers
 * queue through per-NUMA lists, one of them moves a whole batch into the
 * socket's queue and notifies only after unlocking it, so a reader can take
 * datagrams of the batch before any notification shows them. The queue is
 * FIFO and a datagram read has no flight left: the read took the oldest
 * arrival still in flight, not the latest (which left the one read in the
 * table, never delivered, and took the latest's flight from its own read).
 * The ring holds more arrivals than a queue of closed-loop requests from a
 * few dozen clients: when even its oldest is still in flight, an older one
 * may have been read (pair_unsure). */
#define ARRIVALS 32
_Static_assert((ARRIVALS & (ARRIVALS - 1)) == 0, "a power of two");

struct arrivals {
	struct sp_flight_key keys[ARRIVALS];
	__u32 next;	/* where the next arrival goes, modulo ARRIVALS */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u16);
	__type(value, struct arrivals);
} arrivals SEC(".maps");

/* A port's first arrivals, all free: too big for the stack (512 bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct arrivals);
} no_arrivals SEC(".maps");

/* Per traced socket, the datagram at the head of its queue (next to be read);
 * a zero protocol marks the slot free (kept, not deleted: an LRU delete and
 * insert per receive cost more than the rest of the receive's work). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u64);
	__type(value, struct sp_flight_key);
} queue_head SEC(".maps");

/* The same in the socket's own storage, where every program that reaches the
 * socket has it typed: no hash lookup, and freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sp_flight_key);
} sock_head SEC(".maps");

/* Per traced TCP socket, the segment at the head of its receive queue and
 * the sequence number just past it: a stream is read by bytes, so the
 * segment is delivered by the receive that copies its last byte. */
struct stream_head {
	struct sp_flight_key key;
	__u32 end_seq;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u64);
	__type(value, struct stream_head);
} stream_head SEC(".maps");

/* The UDP socket of sk, for its fields past struct sock: read with plain loads
 * through a cast (CAST), else with probe reads even when sk is typed. */
static __always_inline const struct udp_sock *udp_sock_of(const struct sock *sk,
							  enum read_by typed)
{
	if (typed == CAST)
		return bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct udp_sock));
	return (const struct udp_sock *)sk;
}

static __always_inline __u32 reader_qlen(const struct sock *sk, enum read_by typed)
{
	const struct udp_sock *up = udp_sock_of(sk, typed);

	return typed == CAST ? up->reader_queue.qlen : BPF_CORE_READ(up, reader_queue.qlen);
}

/* The first datagram of sk's reader queue, and how its fields are read. */
static __always_inline struct sk_buff *reader_head(const struct sock *sk, enum read_by typed)
{
	const struct udp_sock *up = udp_sock_of(sk, typed);

	return typed == CAST ? up->reader_queue.next : BPF_CORE_READ(up, reader_queue.next);
}

/* IPPROTO_UDP or IPPROTO_TCP for the IPv4 sockets stackprof follows (in the
 * traced namespaces: a socket elsewhere on the same port is another host's,
 * and its reads must not take this host's datagrams), else 0. */
static __always_inline __u16 sock_proto4(const struct sock *sk, enum read_by typed)
{
	__u16 proto;

	if (READ(typed, sk, __sk_common.skc_family) != AF_INET ||
	    (cfg.filter_netns && !netns_ok(sock_netns(sk, typed))))
		return 0;
	proto = READ(typed, sk, sk_protocol);
	return proto == IPPROTO_UDP || proto == IPPROTO_TCP ? proto : 0;
}

/* The datagram of key reached the stack whole: the latest arrival for port
 * (network order). */
static __always_inline void note_arrival(__u16 port, const struct sp_flight_key *key)
{
	struct arrivals *a, *none;
	__u32 zero = 0;

	a = bpf_map_lookup_elem(&arrivals, &port);
	if (!a) {
		none = bpf_map_lookup_elem(&no_arrivals, &zero);
		if (!none)
			return;
		bpf_map_update_elem(&arrivals, &port, none, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&arrivals, &port);
		if (!a)
			return;
	}
	a->keys[__sync_fetch_and_add(&a->next, 1) % ARRIVALS] = *key;
}

/* The datagram a receive on port took when its socket's head was not known
 * (see arrivals), into key: the oldest of the port's latest arrivals whose
 * flight is left (pair_unsure when that is the oldest the ring holds). In a
 * sampled run a datagram left out has no flight to say whether it was read,
 * and the latest arrival stands. 0: none.
 *
 * A global function, checked by the verifier once per program (see
 * record_value): inlined, its lookups over the ring took the receive return's
 * programs ~0.1 s each to load. */
__noinline int oldest_arrival(__u16 port, struct sp_flight_key *key)
{
	struct arrivals *a = bpf_map_lookup_elem(&arrivals, &port);
	__u32 next;

	if (!a || !key)
		return 0;
	next = a->next;
	if (cfg.sample > 1) {
		*key = a->keys[(next - 1) % ARRIVALS];
		return key->proto;
	}
	for (__u32 i = 0; i < ARRIVALS; i++) {
		*key = a->keys[(next + i) % ARRIVALS];
		if (key->proto && lookup_flight(key)) {
			if (!i)
				miss(SP_MISS_PAIR_UNSURE);
			return 1;
		}
	}
	return 0;
}

/* A datagram of the service ports without a flight reached the stack whole: in
 * a sampled run it is the latest arrival for its port too (see note_unfollowed). */
static __always_inline int unfollowed_arrival(const struct ip_udp *h)
{
	struct sp_flight_key key = {};

	if (frag_off(h) & IP_MF)
		return 0;
	flight_key(h, false, &key);
	if (note_unfollowed(&key))
		note_arrival(h->dport, &key);
	return 0;
}

/* The head slot of socket sk (NULL: it has none and create is false). */
static __always_inline struct sp_flight_key *head_slot(const struct sock *sk, enum read_by typed,
						       bool create)
{
	struct sp_flight_key none = {}, *slot;
	__u64 id = (__u64)sk;

	if (typed && cfg.sock_storage)
		return bpf_sk_storage_get(&sock_head, (struct sock *)sk, NULL,
					  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	slot = bpf_map_lookup_elem(&queue_head, &id);
	if (slot || !create)
		return slot;
	bpf_map_update_elem(&queue_head, &id, &none, BPF_NOEXIST);
	return bpf_map_lookup_elem(&queue_head, &id);
}

/* Remember the datagram now at the head of a socket's queues, if any (UDP
 * reads from reader_queue, refilled from sk_receive_queue), in the socket's
 * head slot (NULL: none yet). */
static __always_inline void note_head(const struct sock *sk, enum read_by typed,
				      struct sp_flight_key *slot, __u64 flags)
{
	struct sp_flight_key key = {};
	struct sp_flight *f = NULL;

	if (slot && slot->proto && flags == BPF_NOEXIST)
		return;

	if (reader_qlen(sk, typed))
		f = datagram_flight(reader_head(sk, typed), typed == CAST ? CAST : UNTYPED, &key);
	else if (READ(typed, sk, sk_receive_queue.qlen))
		f = datagram_flight(READ(typed, sk, sk_receive_queue.next), typed, &key);
	if (!f && !note_unfollowed(&key))
		return;
	if (!slot)
		slot = head_slot(sk, typed, true);
	if (slot && (flags == BPF_ANY || !slot->proto))
		*slot = key;
}

/* The datagram of key is alone in sk's queues: it is the head (a free slot
 * takes it; a taken one belongs to a read in progress). Saves note_head's
 * second look at the queue. False when it is not alone. */
static __always_inline bool claim_lone_head(const struct sock *sk, enum read_by typed,
					    const struct sp_flight_key *key)
{
	struct sp_flight_key *slot;

	if (reader_qlen(sk, typed) ||
	    READ(typed, sk, sk_receive_queue.qlen) != 1)
		return false;
	slot = head_slot(sk, typed, true);
	if (slot && !slot->proto)
		*slot = *key;
	return true;
}

static __always_inline __u32 tcp_end_seq(const struct sk_buff *skb)
{
	const struct tcp_skb_cb *cb =
		(const void *)skb + bpf_core_field_offset(struct sk_buff, cb);

	return BPF_CORE_READ(cb, end_seq);
}

/* Remember the segment now at the head of a TCP socket's receive queue. */
static __always_inline void note_stream_head(const struct sock *sk, enum read_by typed, __u64 flags)
{
	struct stream_head head = {};
	struct sk_buff *skb;
	__u64 id = (__u64)sk;

	if (!READ(typed, sk, sk_receive_queue.qlen))
		return;
	skb = READ(typed, sk, sk_receive_queue.next);
	if (!datagram_flight(skb, typed, &head.key) && !note_unfollowed(&head.key))
		return;
	head.end_seq = tcp_end_seq(skb);
	bpf_map_update_elem(&stream_head, &id, &head, flags);
}

#endif /* __STACKPROF_SOCKQ_BPF_H */
