/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Sampling (--sample N): 1 datagram in N is followed, chosen when its flight
 * would start by a hash of its flight key alone (keyhash.bpf.h). A datagram
 * left out has no flight, and every lookup of its key says so by that hash
 * without touching the flight table: the other hooks pay their filter and the
 * hash. What this file holds is what a datagram left out still costs: its
 * counts at the send, and its place in its socket's queue.
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
#include "keyhash.bpf.h"
#include "flights.bpf.h"
#include "rings.bpf.h"

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
