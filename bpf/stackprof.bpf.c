// SPDX-License-Identifier: GPL-2.0
/*
 * Per-stage latency of datagrams through the network stack.
 *
 * A datagram's flight is created when its first fragment is queued to the
 * device inside a traced send, keyed like IP reassembly keys fragments, and
 * stamped at each stage boundary up to the socket enqueue. A socket's queue
 * is FIFO, so each traced socket remembers the key of the datagram at its
 * head: the next receive return is that datagram's. Every stage lands in a
 * log-linear histogram in one mmapped global: no per-packet event reaches
 * user space.
 *
 * This file holds the handlers, one per hook point, and the programs that
 * call them, generated from programs.def. Each hook exists in several attach
 * flavours; the loader keeps one per hook. The helpers are in headers by
 * concern: histograms (stats), filters (cfg), stamps (per-thread times),
 * headers (packet headers, skb notes), flights (the in-flight table), sockq
 * (socket queue heads), rings (PF_PACKET ring receivers), stashes (entry
 * arguments kept for return probes), drops (the kernel's drop reasons),
 * sampling (which datagrams a sampled run follows), lean (the merged stages
 * of --detail lean).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "stackprof.h"
#include "histograms.bpf.h"
#include "headers.bpf.h"
#include "filters.bpf.h"
#include "stamps.bpf.h"
#include "flights.bpf.h"
#include "residence.bpf.h"
#include "sockq.bpf.h"
#include "rings.bpf.h"
#include "stashes.bpf.h"
#include "drops.bpf.h"
#include "sampling.bpf.h"
#include "lean.bpf.h"

#define MSG_PEEK 2

char LICENSE[] SEC("license") = "GPL";

/* Whether skb, queued to a device of this kernel, was sent inside the traced
 * host (its device's namespace is in scope): a receive of it here that finds
 * no flight must not begin one (its flight was evicted, or its thread's send
 * stamp taken), as it would for a datagram from afar. Typed programs only. */
static __always_inline bool sent_in_scope(const struct sk_buff *skb)
{
	return !cfg.filter_netns || netns_ok(skb->dev->nd_net.net->ns.inum);
}

/* First fragment queued to the device, inside a traced send: a flight starts. */
static __always_inline int on_dev_queue(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight_key key = {};
	struct sp_flight flight = {};
	struct ip_udp h;
	__u64 *t_send, now;
	bool ours, first;
	__u32 tid;

	ours = skb_ip_udp(skb, typed, &h);
	first = ours && !(frag_off(&h) & IP_OFFSET);
	if (typed)
		leave_note(skb, ours, first && sent_in_scope(skb), &h);
	if (!first)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	t_send = thread_stamp(&send_start, tid);
	if (!t_send || !armed || classify(&h, &flight.path))
		return 0;
	now = bpf_ktime_get_ns();
	if (now - *t_send > STALE_SEND_NS)
		return 0;
	flight.len = payload_len(&h);
	if (!flight.len)
		return 0;	/* a bare TCP acknowledgement carries no message */
	flight.t_send = *t_send;
	flight.t_queue = now;
	flight.sport = h.sport;
	flight.dport = h.dport;
	flight_key(&h, frag_off(&h) & IP_MF, &key);
	if (!sampled(&key))
		return sampled_out(flight.path, &key, &h, flight.t_send);
	if (key.fragmented)
		flight.frag_payload = bpf_ntohs(h.ip.tot_len) - h.ip.ihl * 4;
	insert_flight(&key, &flight, now);
	count(flight.path, SP_CNT_SENT);
	if (key.fragmented)
		count(flight.path, SP_CNT_FRAGMENTED);
	record_stage(flight.path, SP_STAGE_SEND, flight.t_send, now);
	record_send_parts(flight.path, tid, flight.t_send, now);
	if (flight.path == SP_PATH_RESPONSE && cfg.ring_receiver == SP_RING_BLOCKS)
		ring_answered(&h, flight.t_send);
	return 0;
}

/* ip_finish_output2 entry of a datagram's first packet in a traced send. */
static __always_inline int on_output(const void *ip)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), path;
	struct ip_udp h;

	if (!thread_stamp(&send_start, tid) || !ip_header(ip, &h) ||
	    (frag_off(&h) & IP_OFFSET) || classify(&h, &path))
		return 0;
	put_stamp(&output_start, tid, bpf_ktime_get_ns());
	return 0;
}

/* ip_do_fragment entry in a traced send: splits send into UDP/IP and fragmenting. */
static __always_inline int on_fragment(const void *ip)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), path;
	struct ip_udp h;

	if (!thread_stamp(&send_start, tid) || !ip_header(ip, &h) || classify(&h, &path))
		return 0;
	put_stamp(&frag_start, tid, bpf_ktime_get_ns());
	return 0;
}

/* A datagram sent on this host whose receiver is not on it: it ends at its
 * last fragment's (headers h) driver transmit (t_out). */
static __always_inline void send_only(struct sp_flight *f, const struct ip_udp *h, __u64 t_out)
{
	__u32 frags = 1;

	if (f->frag_payload)
		frags = (frag_off(h) & IP_OFFSET) * 8 / f->frag_payload + 1;
	record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, frags);
	record_stage(f->path, SP_STAGE_TX_FRAGS, f->t_queue, t_out);
	record_stage(f->path, SP_STAGE_TOTAL, f->t_send, t_out);
	count(f->path, SP_CNT_SEND_ONLY);
	drop_flight(f);
}

/* The last fragment (or only packet) of a datagram sent here left through the
 * driver: the client's request or the server's response is out, and through
 * hardware the datagram leaves this kernel. */
static __always_inline void last_out(const struct sk_buff *skb, enum read_by typed, const struct ip_udp *h,
				     struct sp_flight *f, __u64 now)
{
	f->t_xmit_last = now;
	if (h->ip.protocol == IPPROTO_UDP && f->origin == SP_ORIGIN_SEND) {
		if (f->path == SP_PATH_REQUEST)
			request_left(h->ip.saddr, f->sport, f->t_send, now);
		else
			response_left(h->ip.daddr, f->dport, f->t_send, now);
	}
	if (skb_leaves_host(skb, typed))
		send_only(f, h, now);
}

/* Driver transmit of a datagram's first packet (the qdisc stage ends) and of
 * its last (see last_out). */
static __always_inline int on_dev_xmit(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight *f;
	struct ip_udp h;
	bool here;
	__u64 now;
	__u16 off;

	if (!device_headers(skb, typed, AT_XMIT, true, &h, &here))
		return 0;
	off = frag_off(&h);
	f = off & IP_OFFSET ? last_packet_flight(&h) : head_flight(&h);
	if (!f)
		return 0;
	now = bpf_ktime_get_ns();
	if (!(off & IP_OFFSET) && !f->t_xmit) {
		f->t_xmit = now;
		record_stage(f->path, SP_STAGE_QDISC, f->t_queue, now);
	}
	if (!(off & IP_MF) && !f->t_xmit_last)
		last_out(skb, typed, &h, f, now);
	return 0;
}

/* A first fragment (or only packet) at this host's receive with no flight:
 * sent off the traced host (another host, or a namespace out of scope). Its
 * flight starts here, at the device receive (at_device: t_rx) or the stack
 * entry. Not when a pid or cgroup names the senders followed: a packet being
 * received belongs to no process yet. */
static __always_inline struct sp_flight *arrived_from_afar(const struct ip_udp *h, bool at_device)
{
	struct sp_flight_key key = {};
	struct sp_flight flight = { .origin = SP_ORIGIN_RECEIVE };
	__u16 off = frag_off(h);
	__u64 now;

	if (cfg.filter_tgid || cfg.filter_cgroup || !armed)
		return NULL;
	if (h->ip.protocol != IPPROTO_UDP || (off & IP_OFFSET) || classify(h, &flight.path))
		return NULL;
	flight.len = payload_len(h);
	if (!flight.len)
		return NULL;
	flight_key(h, off & IP_MF, &key);
	if (!sampled(&key))
		return NULL;
	now = bpf_ktime_get_ns();
	if (at_device)
		flight.t_rx = now;
	else
		flight.t_stack = now;
	flight.sport = h->sport;
	flight.dport = h->dport;
	if (key.fragmented)
		flight.frag_payload = bpf_ntohs(h->ip.tot_len) - h->ip.ihl * 4;
	insert_flight(&key, &flight, now);
	count(flight.path, SP_CNT_ARRIVED);
	return lookup_flight(&key);
}

/* Whether a packet received by skb's device is off the traced host (a
 * namespace out of scope). A datagram sent here whose last fragment (or only
 * packet) arrives there had its receiver off the host: it ends send-only, at
 * its last fragment's transmit. */
static __always_inline bool off_host(const struct sk_buff *skb, enum read_by typed, const struct ip_udp *h)
{
	struct sp_flight *f;

	if (!cfg.filter_netns || netns_ok(skb_netns(skb, typed)))
		return false;
	f = last_packet_flight(h);
	if (f && f->origin == SP_ORIGIN_SEND)
		send_only(f, h, f->t_xmit_last ?: bpf_ktime_get_ns());
	return true;
}

/* Device receive of a datagram's first packet: the driver stage ends, or (sent
 * off the host) its flight begins. Every device-receive tracepoint calls this
 * (netif_rx, and the NAPI/GRO entries of NIC drivers and of veth in NAPI mode):
 * the first to fire for a datagram stamps it. */
static __always_inline int on_dev_rx(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight *f;
	struct ip_udp h;
	bool here;

	if (!device_headers(skb, typed, AT_RX, cfg.filter_netns, &h, &here) ||
	    off_host(skb, typed, &h) || (frag_off(&h) & IP_OFFSET))
		return 0;
	f = head_flight(&h);
	if (!f) {
		if (!here)
			arrived_from_afar(&h, true);
		return 0;
	}
	if (f->t_rx)
		return 0;
	f->t_rx = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_DRIVER, f->t_xmit, f->t_rx);
	return 0;
}

/* The last fragment closes the train (unless the first comes after it:
 * on_stack_rx closes it then); middle fragments cost one header read. */
static __always_inline int on_last_fragment(const struct sk_buff *skb, const struct ip_udp *h)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	__u32 frags;

	flight_key(h, true, &key);
	f = lookup_flight(&key);
	if (!f || f->t_last)
		return 0;
	f->t_last = bpf_ktime_get_ns();
	ring_push(skb, &key, f);
	if (f->t_stack)	/* else whole at its first fragment: on_stack_rx notes it */
		note_arrival(f->dport, &key);
	record_stage(f->path, SP_STAGE_FRAG_TRAIN, f->t_stack, f->t_last);
	if (f->frag_payload) {
		frags = (frag_off(h) & IP_OFFSET) * 8 / f->frag_payload + 1;
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, frags);
	}
	return 0;
}

/* Stack entry (netif_receive_skb) of each packet: the first ends the backlog
 * stage, the last (or only) one completes the datagram at the stack. A first
 * fragment after the last (reordered) ends the train itself: the datagram
 * can be whole no sooner (a middle fragment later still is not seen). */
static __always_inline int on_stack_rx(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	struct ip_udp h;
	bool here;
	__u16 off;

	if (!device_headers(skb, typed, AT_STACK, true, &h, &here) ||
	    (cfg.filter_netns && !netns_ok(skb_netns(skb, typed))))
		return 0;
	off = frag_off(&h);
	if (off & IP_OFFSET)
		return off & IP_MF ? 0 : on_last_fragment(skb, &h);
	flight_key(&h, off & IP_MF, &key);
	f = lookup_flight(&key);
	/* Sent by a traced send (its flight is gone: evicted), or from afar but
	 * begun at the device receive if that is hooked (then it is gone too). */
	if (!f && !here && !cfg.rx_hook)
		f = arrived_from_afar(&h, false);
	else if (f && f->t_stack)
		return 0;
	else if (f)
		f->t_stack = bpf_ktime_get_ns();
	if (!f)
		return unfollowed_arrival(&h);
	record_stage(f->path, SP_STAGE_BACKLOG, f->t_rx, f->t_stack);
	lean_to_stack(f);
	if ((off & IP_MF) && f->t_last) {
		record_value(f->path, SP_STAGE_FRAG_TRAIN, f->t_stack - f->t_last);
		f->t_last = f->t_stack;
		note_arrival(h.dport, &key);
	} else if (!(off & IP_MF)) {
		f->t_last = f->t_stack;
		ring_push_head(skb, &h, f);
		note_arrival(h.dport, &key);
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, 1);
	}
	return 0;
}

/* The datagram of flight f is now in sk's queue. Two CPUs enqueueing to one
 * socket can both find it at the tail: only the first records it. */
static __always_inline void enqueued(struct sp_flight *f)
{
	__u64 now = bpf_ktime_get_ns(), in = arrived(f) ?: f->t_rx;

	/* A datagram is queued within microseconds of its stack entry: a flight
	 * that old is another datagram's, its key reused (a 16-bit IP ID wraps). */
	if (now - in > STALE_SEND_NS)
		return;
	if (__sync_val_compare_and_swap(&f->t_enq, 0, now))
		return;
	/* GRO merged it with others before the stack entry, which saw only the
	 * merged packet's first: its ip_udp is not known. */
	if (!arrived(f))
		count(f->path, SP_CNT_STACK_UNSEEN);
	record_stage(f->path, SP_STAGE_IP_UDP, arrived(f), now);
	record_stage(f->path, SP_STAGE_UDP_RCV, f->t_udp, now);
	count(f->path, SP_CNT_ENQUEUED);
}

/* Socket enqueue: the datagram at the queue's tail is the one just queued.
 * Since 6.18 (commit b650bf0977d3, "udp: remove busylock and add per NUMA
 * queues") one CPU moves a batch of datagrams into the queue, then notifies
 * once per datagram, each time with the batch's last at the tail: the ones
 * before it are not seen here. Unless the enqueue return is hooked, they are
 * counted (enqueue_unseen) and their wait starts at the last fragment's stack
 * entry. (612b1c0dec5b, "udp: avoid calling sock_def_readable() if
 * possible", skipped notifications in 6.13-rc1 only: reverted before 6.13.) */
static __always_inline int on_enqueue(const struct sock *sk, enum read_by typed)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	struct sk_buff *skb;
	__u16 proto;

	proto = sock_proto4(sk, typed);
	if (!proto)
		return 0;
	skb = READ(typed, sk, sk_receive_queue.prev);
	if ((void *)skb == (void *)&sk->sk_receive_queue)
		return 0;
	f = datagram_flight(skb, typed, &key);
	if (!f && !note_unfollowed(&key))
		return 0;
	if (f && !f->t_enq)
		enqueued(f);
	/* A free head slot takes the queues' first datagram (not always this one:
	 * two enqueues can race); a read in progress still owns a taken slot. */
	if (proto == IPPROTO_TCP)
		note_stream_head(sk, typed, BPF_NOEXIST);
	else if (!claim_lone_head(sk, typed, &key))
		note_head(sk, typed, head_slot(sk, typed, false), BPF_NOEXIST);
	return 0;
}

/* UDP enqueue return (fexit/kretprobe): drops counted, and the enqueue time
 * of datagrams no data-ready notification saw (see on_enqueue). Since 6.18
 * (b650bf0977d3) a return of 0 can leave the datagram in a per-NUMA list for
 * another CPU to queue: its time is then when it joined that list, and a drop
 * when the batch finds no room is not seen here (skb:kfree_skb sees it). A
 * dropped datagram's flight is left to on_drop when that is hooked, which
 * counts it by the kernel's reason. */
static __always_inline int on_udp_enqueue_ret(const struct sk_buff *skb, enum read_by typed, int ret)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;

	if (!skb || !(f = datagram_flight(skb, typed, &key)))
		return 0;
	if (ret) {
		count(f->path, SP_CNT_ENQUEUE_DROPS);
		if (!cfg.drop_hook)
			drop_flight(f);
	} else if (!f->t_enq) {
		enqueued(f);
	}
	return 0;
}

/* ip_rcv entry: the packet left the device layer (taps such as packet
 * sockets run before it) for IP. */
static __always_inline int on_ip_rcv(const void *ip)
{
	struct sp_flight *f = completing_flight(ip);

	if (!f || f->t_ip_rcv)
		return 0;
	f->t_ip_rcv = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_IP_RCV, f->t_last, f->t_ip_rcv);
	return 0;
}

/* ip_local_deliver entry: IP checks, netfilter PREROUTING and routing done. */
static __always_inline int on_local_in(const void *ip)
{
	struct sp_flight *f = completing_flight(ip);

	if (!f || f->t_local_in)
		return 0;
	f->t_local_in = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_IP_ROUTE, f->t_ip_rcv ?: f->t_last, f->t_local_in);
	return 0;
}

/* ip_defrag entry (every fragment's): when this CPU's call started. */
static __always_inline int on_defrag_enter(void)
{
	__u32 zero = 0;
	__u64 *start = bpf_map_lookup_elem(&defrag_start, &zero);

	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

/* kprobe flavour of the entry: also keep the skb, which the return probe
 * does not get. */
static __always_inline int on_defrag_probe(const struct sk_buff *skb)
{
	on_defrag_enter();
	return save_skb(ARG_IP_DEFRAG, skb);
}

/* ip_defrag returned: 0 means skb is now the whole datagram (this fragment
 * completed it), and the time since this call's entry is the reassembly's
 * CPU. user says who asked: IP_DEFRAG_LOCAL_DELIVER is ip_local_deliver,
 * after routing; the others are netfilter's (conntrack), at PREROUTING. */
static __always_inline int on_defrag_ret(const struct sk_buff *skb, enum read_by typed, __u32 user,
					 int ret)
{
	__u64 *start, t_entry;
	struct sp_flight_key key = {};
	struct sp_flight *f;
	__u32 zero = 0;

	start = bpf_map_lookup_elem(&defrag_start, &zero);
	if (!start)
		return 0;
	t_entry = *start;
	*start = 0;
	if (ret || !skb || !(f = datagram_flight(skb, typed, &key)) || f->t_defrag)
		return 0;
	f->t_defrag = bpf_ktime_get_ns();
	if (t_entry >= f->t_last) {
		record_stage(f->path, SP_STAGE_IP_RX, f->t_local_in ?: f->t_last, t_entry);
		record_stage(f->path, SP_STAGE_REASSEMBLY, t_entry, f->t_defrag);
	}
	count(f->path, user == IP_DEFRAG_LOCAL_DELIVER ? SP_CNT_DEFRAG_LOCAL : SP_CNT_DEFRAG_NETFILTER);
	return 0;
}

/* UDP receive entry: the datagram is whole and routed to this host. */
static __always_inline int on_udp_rcv(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;

	if (!(f = datagram_flight(skb, typed, &key)) || f->t_udp)
		return 0;
	f->t_udp = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_IP_LOCAL, f->t_defrag ?: f->t_local_in ?: f->t_last, f->t_udp);
	return 0;
}

/* Packet socket delivery of a datagram's last fragment (or only packet). */
static __always_inline int on_packet_rcv(const struct sk_buff *skb, enum read_by typed)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	struct ip_udp h;
	__u16 off;

	if (!ip_header(tx_ip(skb, typed), &h))
		return 0;
	off = frag_off(&h);
	if (off & IP_MF)
		return 0;
	flight_key(&h, off & IP_OFFSET, &key);
	f = lookup_flight(&key);
	if (!f || f->t_pkt || !f->t_last)
		return 0;
	f->t_pkt = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_PKT_DELIVER, f->t_last, f->t_pkt);
	return 0;
}

/* A thread of a ring receiver enters the kernel: every request written to the
 * rings of its namespace since its last such call has been seen by it. A
 * busy receiver reads a frame ring without waiting in poll, so its sends end
 * the wait too; a block ring shows nothing before a poll returns its block. */
static __always_inline int on_ring_wake(bool polled)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ring_pending *pending;
	struct sp_flight_key *key;
	struct sp_flight *f;
	__u32 head, tail;
	__u64 now;

	if (!cfg.ring_receiver || (!polled && cfg.ring_receiver == SP_RING_BLOCKS) ||
	    !task_traced())
		return 0;
	pending = ring_of(BPF_CORE_READ(task, nsproxy, net_ns, ns.inum));
	if (!pending)
		return 0;
	head = pending->head;
	tail = pending->tail;
	if (head == tail)
		return 0;
	/* More pushed than keys holds: a frame ring kept its oldest (later pushes
	 * were counted as ring_full and not kept), a block ring its newest (the
	 * older ones wait in ring_waiting for their response). Either way the
	 * last SP_RING_PENDING slots visit each key once. */
	if (tail - head > SP_RING_PENDING)
		head = tail - SP_RING_PENDING;
	now = bpf_ktime_get_ns();
	for (__u32 i = 0; i < SP_RING_PENDING && head + i != tail; i++) {
		key = &pending->keys[(head + i) % SP_RING_PENDING];
		f = lookup_flight(key);
		if (f)
			ring_delivered(key, f, now);
	}
	pending->head = tail;
	return 0;
}

/* Messages one recvmmsg call returned: the batch actually achieved. */
static __always_inline int on_recvmmsg_ret(long ret)
{
	if (ret > 0 && task_traced())
		record_value(SP_PATH_REQUEST, SP_NSTAGES + SP_HIST_BATCH, ret);
	return 0;
}

/* The receive call now returning handed the datagram of flight f over. */
static __always_inline void delivered(const struct sp_flight_key *key, const struct sp_flight *f)
{
	__u64 now = bpf_ktime_get_ns(), wait_from = f->t_enq, start, *t_enter;
	__u64 in = arrived(f) ?: f->t_rx;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (now - in > STALE_SEND_NS) {
		miss(SP_MISS_KEY_REUSED);	/* another datagram's flight: see enqueued() */
		return;
	}
	if (!wait_from) {
		count(f->path, SP_CNT_ENQUEUE_UNSEEN);
		wait_from = in;
	}
	t_enter = thread_stamp(&recv_start, tid);
	start = t_enter && *t_enter > wait_from ? *t_enter : wait_from;
	record_sock_recv(f->path, t_enter, wait_from, start, now);
	record_stage(f->path, SP_STAGE_TOTAL, flight_begin(f), now);
	count(f->path, SP_CNT_DELIVERED);
	if (f->origin == SP_ORIGIN_RECEIVE)
		count(f->path, SP_CNT_RECEIVE_ONLY);
	if (key->proto != IPPROTO_UDP)
		return;
	if (f->path == SP_PATH_REQUEST)
		request_read(key->saddr, f->sport, f->t_rx ?: f->t_stack, wait_from, now);
	else
		response_read(key->daddr, f->dport, f->t_rx ?: f->t_stack, wait_from, start, now);
}

/* The datagram this receive returned, then the next head of the queue. A head
 * noted with no flight left in an unsampled run was read already (noted late,
 * racing with the read that took it): the port's arrivals tell then too. */
static __always_inline int on_datagram_recv(const struct sock *sk, enum read_by typed, int ret)
{
	struct sp_flight_key key = {}, *slot;
	struct sp_flight *f = NULL, copy;
	bool noted;

	slot = head_slot(sk, typed, false);
	noted = slot && slot->proto;
	if (noted) {
		key = *slot;
		f = lookup_flight(&key);
	}
	if (!f && (!noted || cfg.sample <= 1) &&
	    oldest_arrival(bpf_htons(READ(typed, sk, __sk_common.skc_num)), &key))
		f = lookup_flight(&key);
	if (f) {
		/* Read the flight whole, then check that its slot still holds it: a
		 * new flight's times are not this datagram's. This one was lost
		 * (flight_full), not mis-paired. */
		copy = *f;
		if (!slot_holds(f, &key))
			f = NULL;
	}
	if (f && copy.len != ret)
		miss(SP_MISS_PAIR_MISMATCH);
	else if (f && (arrived(&copy) || copy.t_rx))
		delivered(&key, &copy);
	if (f)
		drop_flight(f);
	/* Free the head slot before looking at the queues again, so that an
	 * enqueue racing with this read can claim it. */
	if (slot)
		slot->proto = 0;
	note_head(sk, typed, slot, BPF_ANY);
	return 0;
}

/* A TCP receive returned: the head segment is delivered once its last byte
 * has been copied (copied_seq past its end); a partial read waits. */
static __always_inline int on_stream_recv(const struct sock *sk, enum read_by typed)
{
	struct stream_head *head;
	struct sp_flight *f;
	__u64 id = (__u64)sk;
	__u32 copied;

	head = bpf_map_lookup_elem(&stream_head, &id);
	if (!head) {
		note_stream_head(sk, typed, BPF_NOEXIST);
		return 0;
	}
	copied = BPF_CORE_READ((struct tcp_sock *)sk, copied_seq);
	if ((__s32)(copied - head->end_seq) < 0)
		return 0;
	f = lookup_flight(&head->key);
	if (f && arrived(f))
		delivered(&head->key, f);
	if (f)
		drop_flight(f);
	bpf_map_delete_elem(&stream_head, &id);
	note_stream_head(sk, typed, BPF_ANY);
	return 0;
}

static __always_inline int on_recv_return(const struct sock *sk, enum read_by typed, int ret, int flags)
{
	__u16 proto;

	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	proto = sock_proto4(sk, typed);
	if (proto == IPPROTO_UDP)
		return on_datagram_recv(sk, typed, ret);
	return proto == IPPROTO_TCP ? on_stream_recv(sk, typed) : 0;
}

/* kprobe flavour of a receive return: the socket and flags its entry kept. */
static __always_inline int recv_args_return(int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct recv_args *args = bpf_map_lookup_elem(&recv_args, &tid);

	if (!args)
		return 0;
	on_recv_return((const struct sock *)args->sk, UNTYPED, ret, args->flags);
	bpf_map_delete_elem(&recv_args, &tid);
	return 0;
}

/* A packet freed as dropped (skb:kfree_skb), with the kernel's reason. Most
 * frees are of packets nobody follows: the first difference ends the look. A
 * dropped fragment leaves its datagram incomplete (unless it duplicated one
 * already there), which the reassembly's timeout says: it frees each fragment
 * it holds, and the first of them ends the flight, so that the datagram counts
 * once. A whole datagram's drop ends its flight, counted by cause. A ring
 * receiver's requests reach it through the ring, whatever the stack does with
 * them (the packet server's own socket drops them all), and TCP sends again
 * what was dropped: neither is counted. */
static __always_inline int on_drop(const struct sk_buff *skb, enum read_by typed, __u32 reason)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	struct ip_udp h;
	__u32 cause;
	bool fragment;

	if (!skb || !ip_header(tx_ip(skb, typed), &h) || h.ip.protocol != IPPROTO_UDP)
		return 0;
	fragment = frag_off(&h) & (IP_MF | IP_OFFSET);
	if (fragment) {
		flight_key(&h, true, &key);
		f = lookup_flight(&key);
	} else {
		f = whole_flight(&h, &key);
	}
	if (!f || (cfg.ring_receiver && f->path == SP_PATH_REQUEST) || copy_dropped(reason))
		return 0;
	cause = drop_cause(reason);
	if (fragment) {
		if (flight_complete(true, f))
			cause = SP_DROP_DUPLICATE;
		if (cause != SP_DROP_INCOMPLETE) {
			count_frag_dropped(f->path, cause);
			return 0;
		}
	}
	count_lost(f->path, cause);
	drop_flight(f);
	return 0;
}

/* A send starts; a ring receiver's send also means it has read its ring. */
static __always_inline int on_send_enter(void)
{
	on_ring_wake(false);
	return stamp_thread(&send_start);
}


/* The programs, one per line of programs.def: a section named after the
 * attach kind and target, the arguments unpacked for BPF_PROG, BPF_KPROBE or
 * BPF_KRETPROBE, and the handler call returned. */
#define SP_UNPAREN(...) __VA_ARGS__
#define SP_BPF_PROG(name, ...) BPF_PROG(name, __VA_ARGS__)
#define SP_BPF_KPROBE(name, ...) BPF_KPROBE(name, __VA_ARGS__)
#define SP_BPF_KRETPROBE(name, ...) BPF_KRETPROBE(name, __VA_ARGS__)
#define SP_PROG_AT(kind, target, name, args, call)       \
	SEC(kind "/" target)                             \
	int SP_BPF_PROG(name, SP_UNPAREN args) { return call; }

#define SP_TRACEPOINT(target, name, args, call) \
	SEC("tracepoint/" target)               \
	int name args { return call; }
#define SP_TP_BTF(target, name, args, call) SP_PROG_AT("tp_btf", target, name, args, call)
#define SP_RAW_TP(target, name, args, call) SP_PROG_AT("raw_tp", target, name, args, call)
#define SP_FENTRY(target, name, args, call) SP_PROG_AT("fentry", target, name, args, call)
#define SP_FEXIT(target, name, args, call) SP_PROG_AT("fexit", target, name, args, call)
#define SP_KPROBE(target, name, args, call) \
	SEC("kprobe/" target)               \
	int SP_BPF_KPROBE(name, SP_UNPAREN args) { return call; }
#define SP_KRETPROBE(target, name, args, call) \
	SEC("kretprobe/" target)               \
	int SP_BPF_KRETPROBE(name, SP_UNPAREN args) { return call; }

#include "programs.def"
