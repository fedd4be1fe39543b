/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Datagrams in flight: the boundary timestamps of each datagram between its
 * send and its receive, in a table keyed like IP reassembly keys fragments
 * (the skb changes identity during reassembly, its headers do not). Here are
 * the key, the set a key hashes to, lookup, insert and drop, and the lookups
 * by a packet's headers. User space reads the table mmapped, scanning every
 * slot (profiler/collector.py); tests/flight_keys.py mirrors the key.
 */
#ifndef __STACKPROF_FLIGHTS_BPF_H
#define __STACKPROF_FLIGHTS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "headers.bpf.h"
#include "stamps.bpf.h"

/* Datagrams in flight, in sets of SP_FLIGHT_WAYS slots picked by a hash of
 * their key: every lookup is an inlined array access, an insert or a delete a
 * few stores (an LRU hash costs a helper call for each, and an insert on one
 * CPU of a slot freed on another takes the LRU's locks). A full set gives its
 * stalest slot to the new flight. User space reads the table mmapped. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SP_FLIGHT_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sp_flight_slot);
} flights SEC(".maps");

/* The key of a packet's datagram. Unfragmented datagrams add their ports:
 * ip_select_ident_segs() gives the DF packets of unconnected sockets IP ID 0
 * (in every kernel stackprof supports), so their IDs tell nothing apart. */
static __always_inline void flight_key(const struct ip_udp *h, bool fragmented,
				       struct sp_flight_key *key)
{
	key->saddr = h->ip.saddr;
	key->daddr = h->ip.daddr;
	key->id = h->ip.id;
	key->proto = h->ip.protocol;
	key->fragmented = fragmented;
	key->sport = fragmented ? 0 : h->sport;
	key->dport = fragmented ? 0 : h->dport;
}

static __always_inline bool same_key(const struct sp_flight_key *a, const struct sp_flight_key *b)
{
	return a->saddr == b->saddr && a->daddr == b->daddr && a->id == b->id &&
	       a->proto == b->proto && a->fragmented == b->fragmented && a->sport == b->sport &&
	       a->dport == b->dport;
}

#define FLIGHT_SETS (SP_FLIGHT_ENTRIES / SP_FLIGHT_WAYS)
_Static_assert((FLIGHT_SETS & (FLIGHT_SETS - 1)) == 0, "a power of two");

/* murmur3's finaliser: every input bit moves every output bit. */
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* First slot of key's set: a hash of everything but the IP ID, plus the ID. A
 * sender numbers its datagrams in sequence, so its flights take consecutive
 * sets, on the few pages (and TLB entries) it touched last. */
static __always_inline __u32 flight_set(const struct sp_flight_key *k)
{
	__u32 h = mix32(k->saddr);

	h = mix32(h ^ k->daddr);
	h = mix32(h ^ ((__u32)k->proto << 8 | k->fragmented));
	h = mix32(h ^ ((__u32)k->sport << 16 | k->dport));
	return ((h + bpf_ntohs(k->id)) & (FLIGHT_SETS - 1)) * SP_FLIGHT_WAYS;
}

static __always_inline struct sp_flight_slot *flight_slot(__u32 index)
{
	return bpf_map_lookup_elem(&flights, &index);
}

static __always_inline struct sp_flight *lookup_flight(const struct sp_flight_key *key)
{
	__u32 first = flight_set(key);
	struct sp_flight_slot *slot;

	for (__u32 way = 0; way < SP_FLIGHT_WAYS; way++) {
		slot = flight_slot(first + way);
		if (slot && slot->key.proto && same_key(&slot->key, key))
			return &slot->f;
	}
	return NULL;
}

/* Free the slot of flight f (a pointer lookup_flight gave). */
static __always_inline void drop_flight(struct sp_flight *f)
{
	struct sp_flight_slot *slot = (void *)f - __builtin_offsetof(struct sp_flight_slot, f);

	slot->key.proto = 0;
}

/* Start flight f of key at now: a flight of the same key still there was
 * another datagram's (key_reused); a set without a free or stale slot loses
 * its oldest flight (flight_full). */
static __always_inline void insert_flight(const struct sp_flight_key *key,
					  const struct sp_flight *f, __u64 now)
{
	struct sp_flight_slot *slot, *best = NULL;
	__u32 first = flight_set(key);
	__u64 best_age = 0, age;

	for (__u32 way = 0; way < SP_FLIGHT_WAYS; way++) {
		slot = flight_slot(first + way);
		if (!slot)
			return;
		age = slot->key.proto ? now - slot->f.t_queue : ~0ULL;
		if (slot->key.proto && same_key(&slot->key, key)) {
			miss(SP_MISS_KEY_REUSED);
			best = slot;
			break;
		}
		if (!best || age > best_age) {
			best = slot;
			best_age = age;
		}
	}
	if (!best)
		return;
	if (best->key.proto && best_age <= STALE_SEND_NS && !same_key(&best->key, key))
		miss(SP_MISS_FLIGHT_FULL);
	/* Free while rewriting, so that no reader pairs the new times with the old key. */
	best->key.proto = 0;
	asm volatile("" ::: "memory");
	best->f = *f;
	asm volatile("" ::: "memory");
	best->key = *key;
}

/* The flight of the first fragment (or only packet) of a datagram. */
static __always_inline struct sp_flight *head_flight(const struct ip_udp *h)
{
	struct sp_flight_key key = {};

	if (frag_off(h) & IP_OFFSET)
		return NULL;
	flight_key(h, frag_off(h) & IP_MF, &key);
	return lookup_flight(&key);
}

/* A datagram after reassembly: a datagram without DF is looked up as
 * fragmented first (reassembly clears MF and the offset). */
static __always_inline struct sp_flight *datagram_flight(const struct sk_buff *skb, bool typed,
							  struct sp_flight_key *key)
{
	struct sp_flight *f;
	struct ip_udp h;
	bool df;

	if (!ip_header(tx_ip(skb, typed), &h))
		return NULL;
	df = frag_off(&h) & IP_DF;
	flight_key(&h, !df, key);
	f = lookup_flight(key);
	if (f || df)
		return f;
	flight_key(&h, false, key);
	return lookup_flight(key);
}

/* The flight of the packet that completes a datagram at IP (its last fragment,
 * or the whole datagram), seen after its stack entry. */
static __always_inline struct sp_flight *completing_flight(const void *ip)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	struct ip_udp h;
	__u16 off;

	if (!ip_header(ip, &h))
		return NULL;
	off = frag_off(&h);
	if (off & IP_MF)
		return NULL;
	flight_key(&h, off & IP_OFFSET, &key);
	f = lookup_flight(&key);
	return f && f->t_last ? f : NULL;
}

#endif /* __STACKPROF_FLIGHTS_BPF_H */
