/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Packets the kernel dropped, and why. skb:kfree_skb carries an enum
 * skb_drop_reason since 5.17 (c504e5c2f964, "net: skb: introduce
 * kfree_skb_reason()"); its numbers move between kernels (a reason added
 * anywhere in the list renumbers the rest), so each is read from the running
 * kernel's BTF by a CO-RE enum value relocation, and a reason the kernel lacks
 * matches nothing. The reasons map to stackprof's few causes (enum
 * sp_drop_cause), counted per path (count_lost, count_frag_dropped).
 */
#ifndef __STACKPROF_DROPS_BPF_H
#define __STACKPROF_DROPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "stackprof.h"
#include "histograms.bpf.h"

/* Whether reason is the running kernel's SKB_DROP_REASON_<name>. */
#define REASON_IS(reason, name)                                                         \
	(bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_##name) &&    \
	 (reason) == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_##name))

/* The cause a drop reason stands for (SP_DROP_OTHER for NOT_SPECIFIED and any
 * reason not listed). A kernel without the reassembly reasons
 * (FRAG_REASM_TIMEOUT, FRAG_TOO_FAR, DUP_FRAG) frees a timed-out fragment with
 * none: its datagram is then found incomplete by user space at the end. */
static __always_inline __u32 drop_cause(__u32 reason)
{
	if (REASON_IS(reason, FRAG_REASM_TIMEOUT) || REASON_IS(reason, FRAG_TOO_FAR))
		return SP_DROP_INCOMPLETE;
	if (REASON_IS(reason, DUP_FRAG))
		return SP_DROP_DUPLICATE;
	if (REASON_IS(reason, SOCKET_RCVBUFF) || REASON_IS(reason, SOCKET_BACKLOG) ||
	    REASON_IS(reason, PROTO_MEM))
		return SP_DROP_SOCKET_FULL;
	if (REASON_IS(reason, NO_SOCKET))
		return SP_DROP_NO_SOCKET;
	if (REASON_IS(reason, SOCKET_FILTER))
		return SP_DROP_SOCKET_FILTER;
	if (REASON_IS(reason, NETFILTER_DROP))
		return SP_DROP_NETFILTER;
	if (REASON_IS(reason, UDP_CSUM) || REASON_IS(reason, IP_CSUM) || REASON_IS(reason, SKB_CSUM))
		return SP_DROP_CHECKSUM;
	if (REASON_IS(reason, CPU_BACKLOG))
		return SP_DROP_BACKLOG_FULL;
	if (REASON_IS(reason, QDISC_DROP) || REASON_IS(reason, QDISC_OVERLIMIT) ||
	    REASON_IS(reason, QDISC_CONGESTED))
		return SP_DROP_QDISC;
	return SP_DROP_OTHER;
}

/* Drops of a copy, not of the datagram: a packet tap (tcpdump, a PF_PACKET
 * socket) freeing the clone it could not keep. */
static __always_inline bool copy_dropped(__u32 reason)
{
	return REASON_IS(reason, PACKET_SOCK_ERROR) || REASON_IS(reason, TAP_FILTER);
}

/* The reason of a classic tracepoint's record (0, not a reason, before 5.17). */
#define KFREE_REASON(ctx) (bpf_core_field_exists((ctx)->reason) ? (ctx)->reason : 0)

#endif /* __STACKPROF_DROPS_BPF_H */
