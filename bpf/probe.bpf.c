// SPDX-License-Identifier: GPL-2.0
/*
 * One trivial program per attach kind, so `stackprof doctor` can prove what
 * this kernel attaches by loading and attaching each one on its own, instead
 * of guessing from version numbers. The function target (udp_rcv) and the
 * tracepoint (netif_receive_skb) exist in every kernel stackprof supports
 * (6.1 to 6.18). The programs do nothing but count, so they cost nothing to
 * leave attached for the instant the doctor holds them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

__u64 hits = 0;

#define PROBE(sec, name) \
	SEC(sec) \
	int name(void *ctx) \
	{ \
		__sync_fetch_and_add(&hits, 1); \
		return 0; \
	}

PROBE("fentry/udp_rcv", probe_fentry)
PROBE("fexit/udp_rcv", probe_fexit)
PROBE("kprobe/udp_rcv", probe_kprobe)
PROBE("kretprobe/udp_rcv", probe_kretprobe)
PROBE("tp_btf/netif_receive_skb", probe_tp_btf)
PROBE("raw_tp/netif_receive_skb", probe_raw_tp)
PROBE("tracepoint/net/netif_receive_skb", probe_tracepoint)

/* Accept every packet whole: a filter that returns the packet length. */
SEC("socket")
int probe_socket(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("tc")
int probe_tc(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}

SEC("xdp")
int probe_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
