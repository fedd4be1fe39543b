/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Sampling (--sample N): 1 datagram in N is followed, chosen when its flight
 * would start by a hash of its flight key alone. Every hook, and a stackprof
 * on the other host, picks the same datagrams with no shared state: a
 * datagram left out has no flight, so the other hooks pay only their filter
 * and the lookup that misses. The hash takes the key's fields as numbers in
 * wire order (addresses, IP ID and ports big-endian as on the wire), so that
 * hosts of any byte order agree; profiler/sampling.py computes the same.
 *
 * The key is the datagram's identity as far as the headers tell: DF datagrams
 * of an unconnected socket all have IP ID 0 (ip_select_ident_segs), so those
 * of one flow (addresses and ports) are followed or left out together.
 *
 * With cfg.sample 0 or 1 (rodata) every datagram is followed and the verifier
 * prunes the hash (and the notes of datagrams left out) away.
 */
#ifndef __STACKPROF_SAMPLING_BPF_H
#define __STACKPROF_SAMPLING_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "filters.bpf.h"
#include "flights.bpf.h"
#include "rings.bpf.h"

/* Not flight_set's hash (which leaves the IP ID out): a seed of its own. */
#define SAMPLE_SEED 0x9e3779b9u

static __always_inline __u32 sample_hash(const struct sp_flight_key *k)
{
	__u32 h = mix32(SAMPLE_SEED ^ bpf_ntohl(k->saddr));

	h = mix32(h ^ bpf_ntohl(k->daddr));
	h = mix32(h ^ ((__u32)bpf_ntohs(k->id) << 16 | (__u32)k->proto << 8 | k->fragmented));
	h = mix32(h ^ ((__u32)bpf_ntohs(k->sport) << 16 | bpf_ntohs(k->dport)));
	return h;
}

/* Whether the datagram of key is followed. */
static __always_inline bool sampled(const struct sp_flight_key *key)
{
	return cfg.sample <= 1 || sample_hash(key) % cfg.sample == 0;
}

/* Whether a datagram without a flight, of key (which has its ports: see
 * whole_flight), takes its place in its socket's queue anyway (sockq.bpf.h): in
 * a sampled run every datagram of the service ports does, so that the receive
 * that takes one left out is paired with it, not with a followed one queued
 * behind it. What it costs: the head notes a followed datagram also takes. */
static __always_inline bool note_unfollowed(const struct sp_flight_key *key)
{
	return cfg.sample > 1 &&
	       (in_ports(bpf_ntohs(key->dport)) || in_ports(bpf_ntohs(key->sport)));
}

/* A datagram left out of the sample at its first fragment's queueing: counted
 * as sent (and fragmented) as a followed one is, and as sampled out, so that
 * sent stays the full count and sent - sampled_out the followed one; no flight,
 * no stage. A block-ring receiver's waiting request is still answered by it. */
static __always_inline int sampled_out(__u32 path, const struct sp_flight_key *key,
				       const struct ip_udp *h, __u64 t_send)
{
	count(path, SP_CNT_SENT);
	if (key->fragmented)
		count(path, SP_CNT_FRAGMENTED);
	count(path, SP_CNT_SAMPLED_OUT);
	if (path == SP_PATH_RESPONSE && cfg.ring_receiver == SP_RING_BLOCKS)
		ring_answered(h, t_send);
	return 0;
}

#endif /* __STACKPROF_SAMPLING_BPF_H */
