/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading a packet's IPv4 and UDP (or TCP) headers and the skb and socket
 * fields that locate them, at the cost each program can afford: READ gives
 * typed programs plain loads and untyped ones CO-RE probe reads, and the
 * device hooks after net_dev_queue take the headers from a per-CPU note that
 * net_dev_queue left instead of reading the packet again. Every hook starts
 * here, so these reads are the hottest code of all.
 */
#ifndef __STACKPROF_HEADERS_BPF_H
#define __STACKPROF_HEADERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff

/* Programs whose arguments are typed (tp_btf, fentry, fexit) read kernel
 * structs with plain loads the verifier checks; raw_tp and kprobe ones, whose
 * arguments are plain numbers, through CO-RE probe reads, a helper call each
 * (~50 ns on a slow VM). CAST programs are typed and also read packet headers
 * and udp_sock fields with plain loads, through bpf_rdonly_cast (see below).
 * Functions taking `typed` get it as a constant from their program, so that
 * each program keeps one of the branches. */
enum read_by { UNTYPED, TYPED, CAST };
#define READ(typed, src, ...) \
	((typed) ? ___arrow(src, __VA_ARGS__) : BPF_CORE_READ(src, __VA_ARGS__))

/* The IPv4 header and, when it follows without options, the start of the UDP
 * header (ports, length) or of the TCP header (ports, sequence, data offset). */
struct ip_udp {
	struct iphdr ip;
	__be16 sport;
	__be16 dport;
	__be16 ulen;
	__be16 check;
	__be32 ack_seq;
	__u8 tcp_doff;	/* data offset in the upper 4 bits */
};

/* Read the IPv4 header and the start of UDP or TCP at ptr; false for others. */
static __always_inline bool read_ip_udp(const void *ptr, struct ip_udp *h)
{
	if (bpf_probe_read_kernel(h, sizeof(*h), ptr))
		return false;
	if (h->ip.version != 4 ||
	    (h->ip.protocol != IPPROTO_UDP && h->ip.protocol != IPPROTO_TCP))
		return false;
	if (h->ip.ihl != 5 &&
	    bpf_probe_read_kernel(&h->sport, sizeof(*h) - sizeof(h->ip), ptr + h->ip.ihl * 4))
		return false;
	return true;
}

/* bpf_rdonly_cast (6.2, "bpf: Add a kfunc for generic type cast"): a pointer
 * taken as a kernel type and read with plain loads that the JIT guards against
 * faults, where bpf_probe_read_kernel costs a helper call. Weak, so that the
 * object still loads on older kernels: only a program that calls it fails to,
 * and its hook falls back to a program that reads with the helper. */
extern void *bpf_rdonly_cast(const void *obj__ign, __u32 btf_id) __ksym __weak;

/* read_ip_udp with plain loads: the fields read_ip_udp's users need. */
static __always_inline bool cast_ip_udp(const void *ptr, struct ip_udp *h)
{
	const struct iphdr *ip = bpf_rdonly_cast(ptr, bpf_core_type_id_kernel(struct iphdr));
	const struct tcphdr *l4;

	__builtin_memset(h, 0, sizeof(*h));
	h->ip.version = ip->version;
	h->ip.ihl = ip->ihl;
	h->ip.protocol = ip->protocol;
	if (h->ip.version != 4 ||
	    (h->ip.protocol != IPPROTO_UDP && h->ip.protocol != IPPROTO_TCP))
		return false;
	h->ip.tot_len = ip->tot_len;
	h->ip.id = ip->id;
	h->ip.frag_off = ip->frag_off;
	h->ip.saddr = ip->saddr;
	h->ip.daddr = ip->daddr;
	l4 = bpf_rdonly_cast((const void *)ip + h->ip.ihl * 4,
			     bpf_core_type_id_kernel(struct tcphdr));
	h->sport = l4->source;
	h->dport = l4->dest;
	if (h->ip.protocol == IPPROTO_UDP)
		h->ulen = ((const struct udphdr *)bpf_rdonly_cast(
				   l4, bpf_core_type_id_kernel(struct udphdr)))->len;
	else
		h->tcp_doff = l4->doff << 4;
	return true;
}

/* Bytes of application data the packet carries (a datagram: all of it). */
static __always_inline __u32 payload_len(const struct ip_udp *h)
{
	if (h->ip.protocol == IPPROTO_UDP)
		return bpf_ntohs(h->ulen) - sizeof(struct udphdr);
	return bpf_ntohs(h->ip.tot_len) - h->ip.ihl * 4 - (h->tcp_doff >> 4) * 4;
}

static __always_inline __u16 frag_off(const struct ip_udp *h)
{
	return bpf_ntohs(h->ip.frag_off);
}

static __always_inline bool skb_is_ipv4(const struct sk_buff *skb, enum read_by typed)
{
	return READ(typed, skb, protocol) == bpf_htons(ETH_P_IP);
}

/* Where an IPv4 skb's IP header is (NULL for other protocols): on transmit
 * (and after the stack has set it) at the network header; on receive, before
 * the stack resets headers, data points at it. */
static __always_inline const void *tx_ip(const struct sk_buff *skb, enum read_by typed)
{
	return skb_is_ipv4(skb, typed) ? READ(typed, skb, head) + READ(typed, skb, network_header)
				       : NULL;
}

static __always_inline const void *rx_ip(const struct sk_buff *skb, enum read_by typed)
{
	return skb_is_ipv4(skb, typed) ? READ(typed, skb, data) : NULL;
}

static __always_inline bool ip_header(const void *ip, struct ip_udp *h)
{
	return ip && read_ip_udp(ip, h);
}

/* The IPv4 and UDP or TCP headers of skb at its network header (on transmit,
 * or once the stack has set it); false for other packets. */
static __always_inline bool skb_ip_udp(const struct sk_buff *skb, enum read_by typed,
				       struct ip_udp *h)
{
	if (typed == CAST)
		return skb_is_ipv4(skb, typed) && cast_ip_udp(skb->head + skb->network_header, h);
	return ip_header(tx_ip(skb, typed), h);
}

/* The inode number of the network namespace of skb's device: four plain loads
 * in typed programs, where the probe reads cost a helper call each. */
static __always_inline __u32 skb_netns(const struct sk_buff *skb, enum read_by typed)
{
	return READ(typed, skb, dev, nd_net.net, ns.inum);
}

/* The inode number of the network namespace of socket sk. */
static __always_inline __u32 sock_netns(const struct sock *sk, enum read_by typed)
{
	return READ(typed, sk, __sk_common.skc_net.net, ns.inum);
}

/* Whether skb's device is hardware (it has a parent on a bus: PCI, virtio),
 * so that what it transmits leaves this kernel; veth, loopback, bridges and
 * tunnels have none. */
static __always_inline bool skb_leaves_host(const struct sk_buff *skb, enum read_by typed)
{
	struct net_device *dev = READ(typed, skb, dev);

	return dev && READ(typed, dev, dev.parent);
}

/* The headers net_dev_queue read from an skb, for the device hooks after it
 * on the same CPU (over veth all of them: transmit, receive, stack entry), so
 * that they skip the probe read. A note names its skb by address, data buffer
 * and truesize; the stack entry, the last of them, wipes it. */
enum note_kind { NOTE_OTHER, NOTE_FIRST, NOTE_MIDDLE, NOTE_LAST };
enum device_hook { AT_XMIT, AT_RX, AT_STACK };

struct skb_note {
	__u64 skb;
	__u64 head;
	__u32 truesize;
	__u16 kind;	/* of IPv4 UDP or TCP packets, whose headers are in h */
	__u16 traced;	/* a first packet sent by a traced send: a flight began */
	struct ip_udp h;
};

#define SKB_NOTES 16

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKB_NOTES);
	__type(key, __u32);
	__type(value, struct skb_note);
} skb_notes SEC(".maps");

static __always_inline struct skb_note *note_slot(const struct sk_buff *skb)
{
	__u32 slot = ((__u64)skb >> 8 ^ (__u64)skb >> 12) & (SKB_NOTES - 1);

	return bpf_map_lookup_elem(&skb_notes, &slot);
}

static __always_inline __u32 note_kind(bool ours, const struct ip_udp *h)
{
	__u16 off;

	if (!ours)
		return NOTE_OTHER;
	off = bpf_ntohs(h->ip.frag_off);
	if (!(off & IP_OFFSET))
		return NOTE_FIRST;
	return off & IP_MF ? NOTE_MIDDLE : NOTE_LAST;
}

/* Typed programs only: reading skb's fields costs nothing there. */
static __always_inline void leave_note(const struct sk_buff *skb, bool ours, bool traced,
				       const struct ip_udp *h)
{
	struct skb_note *note = note_slot(skb);

	if (!note)
		return;
	note->skb = (__u64)skb;
	note->head = (__u64)skb->head;
	note->truesize = skb->truesize;
	note->kind = note_kind(ours, h);
	note->traced = traced;
	if (ours)
		note->h = *h;
}

/* The headers of skb at a device hook after net_dev_queue, when they matter
 * to it: a datagram's first packet, and its last fragment too where last
 * says so (always at the stack entry, the last hook, which wipes the note).
 * From this CPU's note when it has one, else read from the packet. traced
 * says whether a traced send on this kernel sent it (its flight began then,
 * so a receive that finds none must not begin another): only a note knows. */
static __always_inline bool device_headers(const struct sk_buff *skb, enum read_by typed,
					   enum device_hook at, bool last, struct ip_udp *h,
					   bool *traced)
{
	struct skb_note *note = typed ? note_slot(skb) : NULL;

	*traced = false;
	if (note && note->skb == (__u64)skb && note->head == (__u64)skb->head &&
	    note->truesize == skb->truesize) {
		*traced = note->traced;
		if (at == AT_STACK)
			note->skb = 0;
		if (note->kind != NOTE_FIRST &&
		    !((last || at == AT_STACK) && note->kind == NOTE_LAST))
			return false;
		*h = note->h;
		return true;
	}
	return ip_header(at == AT_XMIT ? tx_ip(skb, typed) : rx_ip(skb, typed), h);
}

#endif /* __STACKPROF_HEADERS_BPF_H */
