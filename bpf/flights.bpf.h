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
#include "keyhash.bpf.h"

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

/* A key as two 8-byte words, the second holding the IP ID, protocol and ports:
 * a slot's key is written and checked a word at a time (see slot_holds). */
_Static_assert(sizeof(struct sp_flight_key) == 16, "two words");

static __always_inline void key_words(const struct sp_flight_key *key, __u64 words[2])
{
	__builtin_memcpy(words, key, 2 * sizeof(__u64));
}

#define FLIGHT_SETS (SP_FLIGHT_ENTRIES / SP_FLIGHT_WAYS)
_Static_assert((FLIGHT_SETS & (FLIGHT_SETS - 1)) == 0, "a power of two");

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

/* The flight of key, NULL if none. A datagram a sampled run leaves out has
 * none: its hash says so without touching the table (whose sets, spread over
 * megabytes, cost a hook a cache miss or more). */
static __always_inline struct sp_flight *lookup_flight(const struct sp_flight_key *key)
{
	struct sp_flight_slot *slot;
	__u32 first;

	if (!sampled(key))
		return NULL;
	first = flight_set(key);
	for (__u32 way = 0; way < SP_FLIGHT_WAYS; way++) {
		slot = flight_slot(first + way);
		if (slot && slot->key.proto && same_key(&slot->key, key))
			return &slot->f;
	}
	return NULL;
}

/* When the datagram of flight f was whole at the stack, as far as the hooks
 * saw: the stack entry of its last fragment, or of its first when that came
 * later (reordered), or of the first alone when the last came before the
 * flight started; 0 while nothing arrived. */
static __always_inline __u64 arrived(const struct sp_flight *f)
{
	return f->t_last ?: f->t_stack;
}

/* When flight f began on this host: its send syscall, or (sent elsewhere) its
 * first fragment's device receive, else its stack entry. Totals start here. */
static __always_inline __u64 flight_begin(const struct sp_flight *f)
{
	return f->t_send ?: f->t_rx ?: f->t_stack;
}

/* When flight f was created, for its age in the table. */
static __always_inline __u64 flight_created(const struct sp_flight *f)
{
	return f->t_queue ?: f->t_rx ?: f->t_stack;
}

/* Whether the datagram of flight f became whole: reassembly produced it
 * (ip_defrag returned it, it reached udp_rcv or a socket's queue), or it was
 * never fragmented and reached the stack. Its last fragment arriving is not
 * enough: a first or middle one may never have. A ring receiver reassembles
 * its requests itself: for it they are whole at their last fragment.
 * (profiler/collector.py's flight_complete says the same.) */
static __always_inline bool flight_complete(bool fragmented, const struct sp_flight *f)
{
	if (f->t_enq || f->t_defrag || f->t_udp)
		return true;
	return f->t_last && (!fragmented || (cfg.ring_receiver && f->path == SP_PATH_REQUEST));
}

/* The slot of flight f (a pointer lookup_flight gave). */
static __always_inline struct sp_flight_slot *flight_slot_of(struct sp_flight *f)
{
	return (void *)f - __builtin_offsetof(struct sp_flight_slot, f);
}

/* Whether the slot of flight f still holds key, after its times were read: in
 * a full table another CPU can give the slot to a new flight meanwhile.
 * insert_flight claims the slot (protocol 0), writes the flight, then the key's
 * first word and last its second (protocol included), one store each; reading the
 * second word first, then the first, after the times, sees the old key only if
 * no new time was read (x86 orders loads with loads, stores with stores). */
static __always_inline bool slot_holds(struct sp_flight *f, const struct sp_flight_key *key)
{
	volatile __u64 *words = (volatile __u64 *)&flight_slot_of(f)->key;
	__u64 want[2], second, first;

	key_words(key, want);
	asm volatile("" ::: "memory");
	second = words[1];
	asm volatile("" ::: "memory");
	first = words[0];
	return second == want[1] && first == want[0];
}

/* Free the slot of flight f. */
static __always_inline void drop_flight(struct sp_flight *f)
{
	flight_slot_of(f)->key.proto = 0;
}

/* A slot being written has protocol 0 (no lookup takes it, user space skips
 * it) and this in its fragmented byte, so that a second writer's claim fails. */
#define SLOT_BUSY 0xffULL
#define WORD_PROTO(w) (((w) >> 16) & 0xff)	/* in a key's second word */
#define WORD_FRAGMENTED(w) (((w) >> 24) & 0xff)

static __always_inline volatile __u64 *second_word(struct sp_flight_slot *slot)
{
	return (volatile __u64 *)&slot->key + 1;
}

/* The slot of key's set (from first) that a new flight of key takes: the one
 * holding key already (*reused), else a free one, else the stalest (its age
 * in *age, its key's second word as read in *seen); none that another CPU is
 * writing. NULL: all are. */
static __always_inline struct sp_flight_slot *pick_slot(__u32 first, const struct sp_flight_key *key,
							 __u64 now, __u64 *age, __u64 *seen,
							 bool *reused)
{
	struct sp_flight_slot *slot, *best = NULL;
	__u64 w, a;

	for (__u32 way = 0; way < SP_FLIGHT_WAYS; way++) {
		slot = flight_slot(first + way);
		if (!slot)
			return NULL;
		w = *second_word(slot);
		if (!WORD_PROTO(w) && WORD_FRAGMENTED(w) == SLOT_BUSY)
			continue;
		if (WORD_PROTO(w) && same_key(&slot->key, key)) {
			*reused = true;
			*seen = w;
			return slot;
		}
		/* A flight another CPU started after this one read the clock is
		 * fresh, not ~2^64 ns old. */
		a = !WORD_PROTO(w)			 ? ~0ULL
		    : now > flight_created(&slot->f) ? now - flight_created(&slot->f)
						     : 0;
		if (!best || a > *age) {
			best = slot;
			*age = a;
			*seen = w;
		}
	}
	return best;
}

/* Claim slot for a new flight: its key's second word, as pick_slot saw it
 * (seen), becomes 'being written' by one compare-and-swap. False: another CPU
 * wrote it meanwhile (a slot seen free may hold a new flight by now, whose
 * claim would evict it uncounted). */
static __always_inline bool claim_slot(struct sp_flight_slot *slot, __u64 seen)
{
	__u64 busy = (seen & ~(0xffffULL << 16)) | SLOT_BUSY << 24;

	return seen != busy && __sync_val_compare_and_swap(second_word(slot), seen, busy) == seen;
}

/* Start flight f of key at now: a flight of the same key still there was
 * another datagram's (key_reused); a set without a free or stale slot loses
 * its oldest flight (flight_full). A stale flight whose fragments arrived but
 * never made the whole datagram leaves as incomplete (its reassembly failed
 * without a timeout that says so, e.g. on overlapping fragments, or the
 * kernel's timeout is longer than a flight's life).
 *
 * Two CPUs can start flights in one set at once (a client's request landing
 * in the set of a response being sent): the slot is claimed first, and the
 * one whose claim fails picks again among the others. Only a set every slot
 * of which is being written loses the new flight (flight_full).
 *
 * A global function, so the verifier checks it once per program, on its own
 * (see record_value): inlined, its tries over a set of four multiplied the
 * states of its callers, and each device-receive program took ~50 ms to load. */
__noinline int insert_flight(const struct sp_flight_key *key, const struct sp_flight *f, __u64 now)
{
	struct sp_flight_slot *best = NULL;
	__u64 age = 0, words[2], old = 0;
	bool reused = false, claimed = false;
	__u32 first;

	if (!key || !f)
		return 0;
	first = flight_set(key);
	for (__u32 try = 0; try < SP_FLIGHT_WAYS && !claimed; try++) {
		reused = false;
		best = pick_slot(first, key, now, &age, &old, &reused);
		if (!best)
			break;
		claimed = claim_slot(best, old);
	}
	if (!best || !claimed) {
		miss(SP_MISS_FLIGHT_FULL);
		return 0;
	}
	if (reused)
		miss(SP_MISS_KEY_REUSED);
	else if (WORD_PROTO(old)) {
		if (age <= STALE_SEND_NS)
			miss(SP_MISS_FLIGHT_FULL);
		else if (WORD_FRAGMENTED(old) && arrived(&best->f) &&
			 !flight_complete(true, &best->f))
			count_lost(best->f.path, SP_DROP_INCOMPLETE);
	}
	/* The times, then the key: its second word (the protocol) last. A reader
	 * that read times of the new flight sees the old key gone (slot_holds). */
	best->f = *f;
	asm volatile("" ::: "memory");
	key_words(key, words);
	((volatile __u64 *)&best->key)[0] = words[0];
	asm volatile("" ::: "memory");
	*second_word(best) = words[1];
	return 0;
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

/* The flight of a whole datagram's headers (after reassembly, or never
 * fragmented): without DF it is looked up as fragmented first (reassembly
 * clears MF and the offset). */
static __always_inline struct sp_flight *whole_flight(const struct ip_udp *h,
						      struct sp_flight_key *key)
{
	struct sp_flight *f;
	bool df = frag_off(h) & IP_DF;

	flight_key(h, !df, key);
	f = lookup_flight(key);
	if (f || df)
		return f;
	flight_key(h, false, key);
	return lookup_flight(key);
}

/* A datagram after reassembly (see whole_flight). */
static __always_inline struct sp_flight *datagram_flight(const struct sk_buff *skb, enum read_by typed,
							  struct sp_flight_key *key)
{
	struct ip_udp h;

	if (!skb_ip_udp(skb, typed, &h))
		return NULL;
	return whole_flight(&h, key);
}

/* The flight of a datagram's last fragment (or only packet); NULL for others. */
static __always_inline struct sp_flight *last_packet_flight(const struct ip_udp *h)
{
	struct sp_flight_key key = {};
	__u16 off = frag_off(h);

	if (off & IP_MF)
		return NULL;
	flight_key(h, off & IP_OFFSET, &key);
	return lookup_flight(&key);
}

/* The flight of the packet that completes a datagram at IP (its last fragment,
 * or the whole datagram), seen after its stack entry. */
static __always_inline struct sp_flight *completing_flight(const void *ip)
{
	struct sp_flight *f;
	struct ip_udp h;

	if (!ip_header(ip, &h))
		return NULL;
	f = last_packet_flight(&h);
	return f && f->t_last ? f : NULL;
}

#endif /* __STACKPROF_FLIGHTS_BPF_H */
