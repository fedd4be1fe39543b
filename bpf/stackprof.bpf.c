// SPDX-License-Identifier: GPL-2.0
/*
 * Per-stage latency of datagrams through the network stack.
 *
 * A datagram's flight is created when its first fragment is queued to the
 * device inside a traced send, keyed like IP reassembly keys fragments, and
 * stamped at each stage boundary; the socket enqueue moves it to a per-socket
 * FIFO that the receive return pops. Every stage lands in a log-linear
 * histogram in one mmapped global: no per-packet event reaches user space.
 * Each hook exists in several attach flavours; the loader keeps one per hook.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "stackprof.h"

#define AF_INET 2
#define ETH_P_IP 0x0800
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff
#define MSG_PEEK 2
#define STALE_SEND_NS 1000000000ULL

char LICENSE[] SEC("license") = "GPL";

const volatile struct sp_config cfg = {};

struct sp_stats stats = {};

/* Start of the send and receive calls of traced threads, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} send_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} recv_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_FLIGHT_ENTRIES);
	__type(key, struct sp_flight_key);
	__type(value, struct sp_flight);
} flights SEC(".maps");

/* Enqueue and dequeue counts of each traced socket: a UDP queue is FIFO. */
struct sock_seq {
	__u64 enq;
	__u64 deq;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u64);
	__type(value, struct sock_seq);
} socks SEC(".maps");

struct queued_key {
	__u64 sk;
	__u64 seq;
};

struct queued {
	__u64 t_send;
	__u64 t_enq;
	__u32 path;
	__u32 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_SOCKQ_ENTRIES);
	__type(key, struct queued_key);
	__type(value, struct queued);
} sockq SEC(".maps");

/* The IPv4 header and, when it follows without options, the UDP ports. */
struct ip_udp {
	struct iphdr ip;
	__be16 sport;
	__be16 dport;
};

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* Same maths as profiler/buckets.py: exact below 64 ns, 64 per octave above. */
static __always_inline __u32 bucket_of(__u64 v)
{
	__u32 exp;

	if (v < SP_SUB_BUCKETS)
		return v;
	exp = log2_u64(v);
	if (exp >= SP_MAX_EXP) {
		__sync_fetch_and_add(&stats.missed[SP_MISS_OUT_OF_RANGE], 1);
		return SP_NBUCKETS - 1;
	}
	return SP_SUB_BUCKETS + (exp - SP_SUB_BITS) * SP_SUB_BUCKETS +
	       ((v >> (exp - SP_SUB_BITS)) & (SP_SUB_BUCKETS - 1));
}

#define SP_NHISTS (SP_NPATHS * (SP_NSTAGES + SP_NEXTRA_HISTS))

static __always_inline void record_value(__u32 path, __u32 column, __u64 value)
{
	__u64 slot = (__u64)(path * (SP_NSTAGES + SP_NEXTRA_HISTS) + column) * SP_NBUCKETS +
		     bucket_of(value);

	/* Keep the bound check on the value the access uses. */
	asm volatile("" : "+r"(slot));
	if (slot >= (__u64)SP_NHISTS * SP_NBUCKETS)
		return;
	__sync_fetch_and_add(&stats.hist[0][0] + slot, 1);
}

/* Record the stage that ends now, if its start was seen. */
static __always_inline void record_stage(__u32 path, __u32 stage, __u64 start, __u64 now)
{
	if (!start)
		return;
	record_value(path, stage, now > start ? now - start : 0);
}

static __always_inline void count(__u32 path, __u32 counter)
{
	if (path < SP_NPATHS && counter < SP_NPATH_COUNTERS)
		__sync_fetch_and_add(&stats.path_counters[path][counter], 1);
}

static __always_inline void miss(__u32 what)
{
	if (what < SP_NMISS)
		__sync_fetch_and_add(&stats.missed[what], 1);
}

static __always_inline bool in_ports(__u16 port)
{
	return port >= cfg.port_lo && port <= cfg.port_hi;
}

static __always_inline bool netns_ok(__u32 inum)
{
	if (!cfg.filter_netns)
		return true;
	for (int i = 0; i < SP_MAX_NETNS; i++)
		if (cfg.netns[i] && cfg.netns[i] == inum)
			return true;
	return false;
}

/* Filters on the calling task: pid, cgroup, network namespace. */
static __always_inline bool task_traced(void)
{
	struct task_struct *task;

	if (cfg.filter_tgid && (bpf_get_current_pid_tgid() >> 32) != cfg.tgid)
		return false;
	if (cfg.filter_cgroup && bpf_get_current_cgroup_id() != cfg.cgroup_id)
		return false;
	if (!cfg.filter_netns)
		return true;
	task = (struct task_struct *)bpf_get_current_task();
	return netns_ok(BPF_CORE_READ(task, nsproxy, net_ns, ns.inum));
}

static __always_inline int stamp_thread(void *map)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now;

	if (!task_traced())
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(map, &tid, &now, BPF_ANY);
	return 0;
}

/* Read the IPv4 (+UDP ports) header at ptr; false if not a UDP/IPv4 packet. */
static __always_inline bool read_ip_udp(const void *ptr, struct ip_udp *h)
{
	if (bpf_probe_read_kernel(h, sizeof(*h), ptr))
		return false;
	if (h->ip.version != 4 || h->ip.protocol != IPPROTO_UDP)
		return false;
	if (h->ip.ihl != 5 && bpf_probe_read_kernel(&h->sport, 4, ptr + h->ip.ihl * 4))
		return false;
	return true;
}

static __always_inline bool skb_is_ipv4(const struct sk_buff *skb)
{
	return BPF_CORE_READ(skb, protocol) == bpf_htons(ETH_P_IP);
}

/* Transmit side: the network header is set, data points at the link header. */
static __always_inline bool tx_header(const struct sk_buff *skb, struct ip_udp *h)
{
	if (!skb_is_ipv4(skb))
		return false;
	return read_ip_udp(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header), h);
}

/* Receive side, before the stack resets headers: data points at IP. */
static __always_inline bool rx_header(const struct sk_buff *skb, struct ip_udp *h)
{
	if (!skb_is_ipv4(skb))
		return false;
	return read_ip_udp(BPF_CORE_READ(skb, data), h);
}

static __always_inline __u16 frag_off(const struct ip_udp *h)
{
	return bpf_ntohs(h->ip.frag_off);
}

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

/* The flight of the first fragment (or only packet) of a datagram. */
static __always_inline struct sp_flight *head_flight(const struct ip_udp *h)
{
	struct sp_flight_key key = {};

	if (frag_off(h) & IP_OFFSET)
		return NULL;
	flight_key(h, frag_off(h) & IP_MF, &key);
	return bpf_map_lookup_elem(&flights, &key);
}

static __always_inline int classify(const struct ip_udp *h, __u32 *path)
{
	if (in_ports(bpf_ntohs(h->dport)))
		*path = SP_PATH_REQUEST;
	else if (in_ports(bpf_ntohs(h->sport)))
		*path = SP_PATH_RESPONSE;
	else
		return -1;
	return 0;
}

/* First fragment queued to the device, inside a traced send: a flight starts. */
static __always_inline int on_dev_queue(const struct sk_buff *skb)
{
	struct sp_flight_key key = {};
	struct sp_flight flight = {};
	struct ip_udp h;
	__u64 *t_send, now;
	__u32 tid;

	if (!tx_header(skb, &h) || (frag_off(&h) & IP_OFFSET))
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	t_send = bpf_map_lookup_elem(&send_start, &tid);
	if (!t_send || classify(&h, &flight.path))
		return 0;
	now = bpf_ktime_get_ns();
	if (now - *t_send > STALE_SEND_NS)
		return 0;
	flight.t_send = *t_send;
	flight.t_queue = now;
	flight_key(&h, frag_off(&h) & IP_MF, &key);
	if (key.fragmented)
		flight.frag_payload = bpf_ntohs(h.ip.tot_len) - h.ip.ihl * 4;
	if (bpf_map_lookup_elem(&flights, &key))
		miss(SP_MISS_KEY_REUSED);
	if (bpf_map_update_elem(&flights, &key, &flight, BPF_ANY)) {
		miss(SP_MISS_FLIGHT_FULL);
		return 0;
	}
	count(flight.path, SP_CNT_SENT);
	if (key.fragmented)
		count(flight.path, SP_CNT_FRAGMENTED);
	record_stage(flight.path, SP_STAGE_SEND, flight.t_send, now);
	return 0;
}

static __always_inline int on_dev_xmit(const struct sk_buff *skb)
{
	struct sp_flight *f;
	struct ip_udp h;

	if (!tx_header(skb, &h) || !(f = head_flight(&h)) || f->t_xmit)
		return 0;
	f->t_xmit = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_QDISC, f->t_queue, f->t_xmit);
	return 0;
}

static __always_inline int on_dev_rx(const struct sk_buff *skb)
{
	struct sp_flight *f;
	struct ip_udp h;

	if (!rx_header(skb, &h) || !(f = head_flight(&h)) || f->t_rx)
		return 0;
	f->t_rx = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_DRIVER, f->t_xmit, f->t_rx);
	return 0;
}

/* The last fragment closes the train; middle fragments cost one header read. */
static __always_inline int on_last_fragment(const struct ip_udp *h)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;
	__u32 frags;

	flight_key(h, true, &key);
	f = bpf_map_lookup_elem(&flights, &key);
	if (!f || f->t_last)
		return 0;
	f->t_last = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_FRAG_TRAIN, f->t_stack, f->t_last);
	if (f->frag_payload) {
		frags = (frag_off(h) & IP_OFFSET) * 8 / f->frag_payload + 1;
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, frags);
	}
	return 0;
}

static __always_inline int on_stack_rx(const struct sk_buff *skb)
{
	struct sp_flight *f;
	struct ip_udp h;
	__u16 off;

	if (!rx_header(skb, &h))
		return 0;
	off = frag_off(&h);
	if (off & IP_OFFSET)
		return off & IP_MF ? 0 : on_last_fragment(&h);
	f = head_flight(&h);
	if (!f || f->t_stack)
		return 0;
	f->t_stack = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_BACKLOG, f->t_rx, f->t_stack);
	if (!(off & IP_MF)) {
		f->t_last = f->t_stack;
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, 1);
	}
	return 0;
}

static __always_inline bool sock_is_udp4(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET &&
	       BPF_CORE_READ(sk, sk_protocol) == IPPROTO_UDP;
}

/* Sockets are followed when they pass the filters or receive a traced datagram. */
static __always_inline bool sock_in_scope(const struct sock *sk)
{
	if (!netns_ok(BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum)))
		return false;
	return in_ports(BPF_CORE_READ(sk, __sk_common.skc_num)) ||
	       in_ports(bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)));
}

/* The datagram just enqueued: reassembled if it was fragmented, so a
 * datagram without DF is looked up as fragmented first. */
static __always_inline struct sp_flight *enqueued_flight(const struct sk_buff *skb,
							  struct sp_flight_key *key,
							  struct ip_udp *h)
{
	struct sp_flight *f;
	bool df;

	if (!read_ip_udp(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header), h))
		return NULL;
	df = frag_off(h) & IP_DF;
	flight_key(h, !df, key);
	f = bpf_map_lookup_elem(&flights, key);
	if (f || df)
		return f;
	flight_key(h, false, key);
	return bpf_map_lookup_elem(&flights, key);
}

static __always_inline struct sock_seq *sock_seq_of(__u64 sk, bool create)
{
	struct sock_seq *seq, zero = {};

	seq = bpf_map_lookup_elem(&socks, &sk);
	if (seq || !create)
		return seq;
	bpf_map_update_elem(&socks, &sk, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&socks, &sk);
}

static __always_inline int on_enqueue(const struct sock *sk)
{
	struct sp_flight_key key = {};
	struct queued q = {};
	struct queued_key qk;
	struct sock_seq *seq;
	struct sp_flight *f;
	struct sk_buff *skb;
	struct ip_udp h;
	__u64 now;

	if (!sock_is_udp4(sk))
		return 0;
	skb = BPF_CORE_READ(sk, sk_receive_queue.prev);
	if ((void *)skb == (void *)&sk->sk_receive_queue)
		return 0;
	f = enqueued_flight(skb, &key, &h);
	seq = sock_seq_of((__u64)sk, f || sock_in_scope(sk));
	if (!seq)
		return 0;
	now = bpf_ktime_get_ns();
	qk.sk = (__u64)sk;
	qk.seq = __sync_fetch_and_add(&seq->enq, 1);
	q.len = bpf_ntohs(h.ip.tot_len) - h.ip.ihl * 4 - sizeof(struct udphdr);
	if (f) {
		q.t_send = f->t_send;
		q.t_enq = now;
		q.path = f->path;
		record_stage(f->path, SP_STAGE_IP_UDP, f->t_last, now);
		count(f->path, SP_CNT_ENQUEUED);
		bpf_map_delete_elem(&flights, &key);
	} else {
		miss(SP_MISS_ENQUEUE_UNTRACED);
	}
	if (bpf_map_update_elem(&sockq, &qk, &q, BPF_ANY))
		miss(SP_MISS_SOCKQ_FULL);
	return 0;
}

static __always_inline int on_dequeue(const struct sock *sk, int ret, int flags)
{
	struct queued_key qk;
	struct sock_seq *seq;
	struct queued *q;
	__u64 now, start, *t_enter;
	__u32 tid;

	if (ret < 0 || (flags & MSG_PEEK) || !sock_is_udp4(sk))
		return 0;
	seq = sock_seq_of((__u64)sk, false);
	if (!seq)
		return 0;
	qk.sk = (__u64)sk;
	qk.seq = __sync_fetch_and_add(&seq->deq, 1);
	q = bpf_map_lookup_elem(&sockq, &qk);
	if (!q) {
		miss(SP_MISS_DEQUEUE_UNPAIRED);
		return 0;
	}
	if (q->len != ret)
		miss(SP_MISS_PAIR_MISMATCH);
	if (q->t_send) {
		now = bpf_ktime_get_ns();
		tid = (__u32)bpf_get_current_pid_tgid();
		t_enter = bpf_map_lookup_elem(&recv_start, &tid);
		start = t_enter && *t_enter > q->t_enq ? *t_enter : q->t_enq;
		record_stage(q->path, SP_STAGE_SOCK_WAIT, q->t_enq, start);
		record_stage(q->path, SP_STAGE_RECV, start, now);
		record_stage(q->path, SP_STAGE_TOTAL, q->t_send, now);
		count(q->path, SP_CNT_DELIVERED);
	}
	bpf_map_delete_elem(&sockq, &qk);
	return 0;
}

/* Send and receive calls: classic syscall tracepoints fire only for these. */
SEC("tracepoint/syscalls/sys_enter_sendto")
int tp_sys_enter_sendto(void *ctx) { return stamp_thread(&send_start); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int tp_sys_enter_sendmsg(void *ctx) { return stamp_thread(&send_start); }

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int tp_sys_enter_sendmmsg(void *ctx) { return stamp_thread(&send_start); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int tp_sys_enter_recvfrom(void *ctx) { return stamp_thread(&recv_start); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int tp_sys_enter_recvmsg(void *ctx) { return stamp_thread(&recv_start); }

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int tp_sys_enter_recvmmsg(void *ctx) { return stamp_thread(&recv_start); }

/* Packet and socket hooks: tp_btf first, raw_tp as the fallback. */
SEC("tp_btf/net_dev_queue")
int BPF_PROG(tp_btf_net_dev_queue, struct sk_buff *skb) { return on_dev_queue(skb); }

SEC("raw_tp/net_dev_queue")
int BPF_PROG(raw_tp_net_dev_queue, struct sk_buff *skb) { return on_dev_queue(skb); }

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(tp_btf_net_dev_start_xmit, struct sk_buff *skb) { return on_dev_xmit(skb); }

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(raw_tp_net_dev_start_xmit, struct sk_buff *skb) { return on_dev_xmit(skb); }

SEC("tp_btf/netif_rx")
int BPF_PROG(tp_btf_netif_rx, struct sk_buff *skb) { return on_dev_rx(skb); }

SEC("raw_tp/netif_rx")
int BPF_PROG(raw_tp_netif_rx, struct sk_buff *skb) { return on_dev_rx(skb); }

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(tp_btf_netif_receive_skb, struct sk_buff *skb) { return on_stack_rx(skb); }

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(raw_tp_netif_receive_skb, struct sk_buff *skb) { return on_stack_rx(skb); }

SEC("tp_btf/sk_data_ready")
int BPF_PROG(tp_btf_sk_data_ready, struct sock *sk) { return on_enqueue(sk); }

SEC("raw_tp/sk_data_ready")
int BPF_PROG(raw_tp_sk_data_ready, struct sock *sk) { return on_enqueue(sk); }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_btf_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_dequeue(sk, ret, flags);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(raw_tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_dequeue(sk, ret, flags);
}
