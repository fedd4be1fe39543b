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

/* A thread's timestamp, in the slot its thread id picks: an array lookup is
 * inlined by the verifier where a hash lookup is a helper call, on hooks that
 * fire for every send and receive. A slot names its thread; two traced
 * threads sharing one take turns (counted as thread_slot). */
struct thread_stamp {
	__u32 tid;
	__u32 pad;
	__u64 t;
};

#define THREAD_STAMPS(name)                                  \
	struct {                                             \
		__uint(type, BPF_MAP_TYPE_ARRAY);            \
		__uint(max_entries, SP_THREAD_ENTRIES);      \
		__type(key, __u32);                          \
		__type(value, struct thread_stamp);          \
	} name SEC(".maps")

_Static_assert((SP_THREAD_ENTRIES & (SP_THREAD_ENTRIES - 1)) == 0, "a power of two");

/* Start of the send and receive calls of traced threads. */
THREAD_STAMPS(send_start);
THREAD_STAMPS(recv_start);

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

/* Per thread, when the datagram being sent entered ip_do_fragment, and when
 * its first packet entered ip_finish_output2 (neighbour output). */
THREAD_STAMPS(frag_start);
THREAD_STAMPS(output_start);

/* kprobe flavour only: the skb a probed call got, for its return probe
 * (softirq work does not nest on one CPU). */
enum { ARG_IP_DEFRAG, ARG_UDP_ENQUEUE, NARGS };

/* When the running ip_defrag call started, per CPU (softirq work does not nest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} defrag_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NARGS);
	__type(key, __u32);
	__type(value, __u64);
} entry_skb SEC(".maps");

/* kprobe flavour only: the socket and flags of a thread's udp_recvmsg, for
 * its return probe (a receive can sleep, so by thread, not by CPU). */
struct recv_args {
	__u64 sk;
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u32);
	__type(value, struct recv_args);
} recv_args SEC(".maps");

/* Datagrams written to a packet socket ring, per traced network namespace
 * (the index of its inode in cfg.netns), not yet taken by a receiver woken
 * from poll in that namespace. */
struct ring_pending {
	__u32 head;	/* next to take (the receiver's side) */
	__u32 tail;	/* next free (the stack's side) */
	struct sp_flight_key keys[SP_RING_PENDING];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SP_MAX_NETNS);
	__type(key, __u32);
	__type(value, struct ring_pending);
} ring_pending SEC(".maps");

/* Block-ring receivers only: per client (address, port), its request not yet
 * seen by the receiver. A busy receiver takes retired blocks without polling,
 * so the send of a request's response is the latest its wait can have ended. */
struct ring_client {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, struct ring_client);
	__type(value, struct sp_flight_key);
} ring_waiting SEC(".maps");

/* Per destination port, the unfragmented datagram that last arrived at the
 * stack: what a receive took when the kernel let the reader dequeue it before
 * anything saw it queued (no head noted for the socket). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SP_THREAD_ENTRIES);
	__type(key, __u16);
	__type(value, struct sp_flight_key);
} last_arrival SEC(".maps");

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
	__u32 kind;	/* of IPv4 UDP or TCP packets, whose headers are in h */
	struct ip_udp h;
};

#define SKB_NOTES 16

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKB_NOTES);
	__type(key, __u32);
	__type(value, struct skb_note);
} skb_notes SEC(".maps");

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

static __always_inline struct thread_stamp *stamp_slot(void *map, __u32 tid)
{
	__u32 slot = tid & (SP_THREAD_ENTRIES - 1);

	return bpf_map_lookup_elem(map, &slot);
}

/* The stamp of thread tid in map, NULL if it has none. */
static __always_inline __u64 *thread_stamp(void *map, __u32 tid)
{
	struct thread_stamp *s = stamp_slot(map, tid);

	return s && tid && s->tid == tid ? &s->t : NULL;
}

/* Set a thread's stamp, taking its slot from any other thread. */
static __always_inline void put_stamp(void *map, __u32 tid, __u64 now)
{
	struct thread_stamp *s = stamp_slot(map, tid);

	if (!s || !tid)
		return;
	if (s->tid != tid) {
		if (s->tid && now - s->t < STALE_SEND_NS)
			miss(SP_MISS_THREAD_SLOT);
		s->tid = tid;
	}
	s->t = now;
}

/* Stamp the calling thread if the filters let it through. A thread that has
 * a stamp passed them already (they are constants): its check is spared. */
static __always_inline int stamp_thread(void *map)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *stamp = thread_stamp(map, tid);

	if (stamp)
		*stamp = bpf_ktime_get_ns();
	else if (task_traced())
		put_stamp(map, tid, bpf_ktime_get_ns());
	return 0;
}

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

/* Bytes of application data the packet carries (a datagram: all of it). */
static __always_inline __u32 payload_len(const struct ip_udp *h)
{
	if (h->ip.protocol == IPPROTO_UDP)
		return bpf_ntohs(h->ulen) - sizeof(struct udphdr);
	return bpf_ntohs(h->ip.tot_len) - h->ip.ihl * 4 - (h->tcp_doff >> 4) * 4;
}

/* Programs whose arguments are typed (tp_btf, fentry, fexit) read kernel
 * structs with plain loads the verifier checks; raw_tp and kprobe ones, whose
 * arguments are plain numbers, through CO-RE probe reads, a helper call each
 * (~50 ns on a slow VM). Functions taking `typed` get it as a constant from
 * their program, so that each program keeps one of the two branches. */
#define TYPED true
#define UNTYPED false
#define READ(typed, src, ...) \
	((typed) ? ___arrow(src, __VA_ARGS__) : BPF_CORE_READ(src, __VA_ARGS__))

static __always_inline bool skb_is_ipv4(const struct sk_buff *skb, bool typed)
{
	return READ(typed, skb, protocol) == bpf_htons(ETH_P_IP);
}

/* Where an IPv4 skb's IP header is (NULL for other protocols): on transmit
 * (and after the stack has set it) at the network header; on receive, before
 * the stack resets headers, data points at it. */
static __always_inline const void *tx_ip(const struct sk_buff *skb, bool typed)
{
	return skb_is_ipv4(skb, typed) ? READ(typed, skb, head) + READ(typed, skb, network_header)
				       : NULL;
}

static __always_inline const void *rx_ip(const struct sk_buff *skb, bool typed)
{
	return skb_is_ipv4(skb, typed) ? READ(typed, skb, data) : NULL;
}

static __always_inline bool ip_header(const void *ip, struct ip_udp *h)
{
	return ip && read_ip_udp(ip, h);
}

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
static __always_inline void leave_note(const struct sk_buff *skb, bool ours, const struct ip_udp *h)
{
	struct skb_note *note = note_slot(skb);

	if (!note)
		return;
	note->skb = (__u64)skb;
	note->head = (__u64)skb->head;
	note->truesize = skb->truesize;
	note->kind = note_kind(ours, h);
	if (ours)
		note->h = *h;
}

/* The headers of skb at a device hook after net_dev_queue, when they matter
 * to it: a datagram's first packet, and at the stack entry (the last hook,
 * which wipes the note) its last fragment too. From this CPU's note when it
 * has one, else read from the packet. */
static __always_inline bool device_headers(const struct sk_buff *skb, bool typed,
					   enum device_hook at, struct ip_udp *h)
{
	struct skb_note *note = typed ? note_slot(skb) : NULL;

	if (note && note->skb == (__u64)skb && note->head == (__u64)skb->head &&
	    note->truesize == skb->truesize) {
		if (at == AT_STACK)
			note->skb = 0;
		if (note->kind != NOTE_FIRST && !(at == AT_STACK && note->kind == NOTE_LAST))
			return false;
		*h = note->h;
		return true;
	}
	return ip_header(at == AT_XMIT ? tx_ip(skb, typed) : rx_ip(skb, typed), h);
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

/* A per-thread stamp taken during the send that started at t_send, else 0. */
static __always_inline __u64 stamp_since(void *map, __u32 tid, __u64 t_send, __u64 now)
{
	__u64 *t = thread_stamp(map, tid);

	return t && *t >= t_send && *t <= now ? *t : 0;
}

/* The send split where fine hooks saw it: UDP and IP up to ip_do_fragment (or
 * to ip_finish_output2 when not fragmented), the fragmenting, then the
 * neighbour output of the first packet up to the device queue. */
static __always_inline void record_send_parts(__u32 path, __u32 tid, __u64 t_send, __u64 now)
{
	__u64 t_frag, t_out;

	if (!cfg.fine_tx)
		return;
	t_frag = stamp_since(&frag_start, tid, t_send, now);
	t_out = stamp_since(&output_start, tid, t_send, now);

	if (t_frag || t_out)
		record_stage(path, SP_STAGE_UDP_IP_TX, t_send, t_frag ?: t_out);
	if (t_frag)
		record_stage(path, SP_STAGE_FRAGMENT, t_frag, t_out ?: now);
	record_stage(path, SP_STAGE_NEIGH_TX, t_out, now);
}

/* The ring-pending set of a traced namespace, NULL for others. */
static __always_inline struct ring_pending *ring_of(__u32 netns)
{
	for (__u32 i = 0; i < SP_MAX_NETNS; i++)
		if (cfg.netns[i] && cfg.netns[i] == netns)
			return bpf_map_lookup_elem(&ring_pending, &i);
	return NULL;
}

/* The ring receiver has seen the request of flight f by now. */
static __always_inline void ring_delivered(struct sp_flight *f, __u64 now)
{
	if (now - f->t_last > STALE_SEND_NS) {
		miss(SP_MISS_KEY_REUSED);	/* another datagram's flight: see enqueued() */
	} else {
		record_stage(f->path, SP_STAGE_RING_WAIT, f->t_pkt ?: f->t_last, now);
		record_stage(f->path, SP_STAGE_TOTAL, f->t_send, now);
		count(f->path, SP_CNT_DELIVERED);
		count(f->path, SP_CNT_RING_DELIVERED);
	}
	drop_flight(f);
}

/* A block-ring receiver sends a response (its headers in h, its send call
 * started at t_send): the client's request, if still waiting, was seen. */
static __always_inline void ring_answered(const struct ip_udp *h, __u64 t_send)
{
	struct ring_client client = { .addr = h->ip.daddr, .port = h->dport };
	struct sp_flight_key *key;
	struct sp_flight *f;

	key = bpf_map_lookup_elem(&ring_waiting, &client);
	if (!key)
		return;
	f = lookup_flight(key);
	if (f && f->path == SP_PATH_REQUEST && t_send > f->t_last)
		ring_delivered(f, t_send);
	bpf_map_delete_elem(&ring_waiting, &client);
}

/* First fragment queued to the device, inside a traced send: a flight starts. */
static __always_inline int on_dev_queue(const struct sk_buff *skb, bool typed)
{
	struct sp_flight_key key = {};
	struct sp_flight flight = {};
	struct ip_udp h;
	__u64 *t_send, now;
	bool ours;
	__u32 tid;

	ours = ip_header(tx_ip(skb, typed), &h);
	if (typed)
		leave_note(skb, ours, &h);
	if (!ours || (frag_off(&h) & IP_OFFSET))
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	t_send = thread_stamp(&send_start, tid);
	if (!t_send || classify(&h, &flight.path))
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

static __always_inline int on_dev_xmit(const struct sk_buff *skb, bool typed)
{
	struct sp_flight *f;
	struct ip_udp h;

	if (!device_headers(skb, typed, AT_XMIT, &h) || !(f = head_flight(&h)) || f->t_xmit)
		return 0;
	f->t_xmit = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_QDISC, f->t_queue, f->t_xmit);
	return 0;
}

static __always_inline int on_dev_rx(const struct sk_buff *skb, bool typed)
{
	struct sp_flight *f;
	struct ip_udp h;

	if (!device_headers(skb, typed, AT_RX, &h) || !(f = head_flight(&h)) || f->t_rx)
		return 0;
	f->t_rx = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_DRIVER, f->t_xmit, f->t_rx);
	return 0;
}

static __always_inline __u32 skb_netns(const struct sk_buff *skb)
{
	return BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
}

/* A request complete at a ring receiver's stack: it waits there for a wake-up. */
static __always_inline void ring_push(const struct sk_buff *skb, const struct sp_flight_key *key,
				      const struct sp_flight *f)
{
	struct ring_pending *pending;
	__u32 slot;

	if (!cfg.ring_receiver || f->path != SP_PATH_REQUEST)
		return;
	pending = ring_of(skb_netns(skb));
	if (!pending)
		return;
	if (cfg.ring_receiver == SP_RING_BLOCKS) {
		struct ring_client client = { .addr = key->saddr, .port = f->sport };

		if (bpf_map_update_elem(&ring_waiting, &client, key, BPF_ANY))
			miss(SP_MISS_RING_FULL);
	}
	slot = __sync_fetch_and_add(&pending->tail, 1);
	/* A frame ring's receiver that far behind loses the oldest; a block ring's
	 * oldest are still waited for by their clients, whose responses end them. */
	if (slot - pending->head >= SP_RING_PENDING && cfg.ring_receiver == SP_RING_FRAMES) {
		miss(SP_MISS_RING_FULL);
		return;
	}
	pending->keys[slot % SP_RING_PENDING] = *key;
}

static __always_inline void note_arrival(const struct ip_udp *h)
{
	struct sp_flight_key key = {}, *last;

	flight_key(h, false, &key);
	last = bpf_map_lookup_elem(&last_arrival, &h->dport);
	if (last)
		*last = key;
	else
		bpf_map_update_elem(&last_arrival, &h->dport, &key, BPF_ANY);
}

static __always_inline void ring_push_head(const struct sk_buff *skb, const struct ip_udp *h,
					   const struct sp_flight *f)
{
	struct sp_flight_key key = {};

	flight_key(h, false, &key);
	ring_push(skb, &key, f);
}

/* The last fragment closes the train; middle fragments cost one header read. */
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
	record_stage(f->path, SP_STAGE_FRAG_TRAIN, f->t_stack, f->t_last);
	if (f->frag_payload) {
		frags = (frag_off(h) & IP_OFFSET) * 8 / f->frag_payload + 1;
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, frags);
	}
	return 0;
}

static __always_inline int on_stack_rx(const struct sk_buff *skb, bool typed)
{
	struct sp_flight *f;
	struct ip_udp h;
	__u16 off;

	if (!device_headers(skb, typed, AT_STACK, &h))
		return 0;
	off = frag_off(&h);
	if (off & IP_OFFSET)
		return off & IP_MF ? 0 : on_last_fragment(skb, &h);
	f = head_flight(&h);
	if (!f || f->t_stack)
		return 0;
	f->t_stack = bpf_ktime_get_ns();
	record_stage(f->path, SP_STAGE_BACKLOG, f->t_rx, f->t_stack);
	if (!(off & IP_MF)) {
		f->t_last = f->t_stack;
		ring_push_head(skb, &h, f);
		note_arrival(&h);
		record_value(f->path, SP_NSTAGES + SP_HIST_FRAGS, 1);
	}
	return 0;
}

/* IPPROTO_UDP or IPPROTO_TCP for the IPv4 sockets stackprof follows, else 0. */
static __always_inline __u16 sock_proto4(const struct sock *sk, bool typed)
{
	__u16 proto;

	if (READ(typed, sk, __sk_common.skc_family) != AF_INET)
		return 0;
	proto = READ(typed, sk, sk_protocol);
	return proto == IPPROTO_UDP || proto == IPPROTO_TCP ? proto : 0;
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

/* The head slot of socket sk (NULL: it has none and create is false). */
static __always_inline struct sp_flight_key *head_slot(const struct sock *sk, bool typed,
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
static __always_inline void note_head(const struct sock *sk, bool typed,
				      struct sp_flight_key *slot, __u64 flags)
{
	struct udp_sock *up = (struct udp_sock *)sk;
	struct sp_flight_key key = {};
	struct sp_flight *f = NULL;

	if (slot && slot->proto && flags == BPF_NOEXIST)
		return;

	/* A udp_sock field is past struct sock: a probe read even when typed. */
	if (BPF_CORE_READ(up, reader_queue.qlen))
		f = datagram_flight(BPF_CORE_READ(up, reader_queue.next), UNTYPED, &key);
	else if (READ(typed, sk, sk_receive_queue.qlen))
		f = datagram_flight(READ(typed, sk, sk_receive_queue.next), typed, &key);
	if (!f)
		return;
	if (!slot)
		slot = head_slot(sk, typed, true);
	if (slot && (flags == BPF_ANY || !slot->proto))
		*slot = key;
}

/* The datagram of key is alone in sk's queues: it is the head (a free slot
 * takes it; a taken one belongs to a read in progress). Saves note_head's
 * second look at the queue. False when it is not alone. */
static __always_inline bool claim_lone_head(const struct sock *sk, bool typed,
					    const struct sp_flight_key *key)
{
	struct sp_flight_key *slot;

	if (BPF_CORE_READ((struct udp_sock *)sk, reader_queue.qlen) ||
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
static __always_inline void note_stream_head(const struct sock *sk, bool typed, __u64 flags)
{
	struct stream_head head = {};
	struct sk_buff *skb;
	__u64 id = (__u64)sk;

	if (!READ(typed, sk, sk_receive_queue.qlen))
		return;
	skb = READ(typed, sk, sk_receive_queue.next);
	if (!datagram_flight(skb, typed, &head.key))
		return;
	head.end_seq = tcp_end_seq(skb);
	bpf_map_update_elem(&stream_head, &id, &head, flags);
}

/* The datagram of flight f is now in sk's queue. Two CPUs enqueueing to one
 * socket can both find it at the tail: only the first records it. */
static __always_inline void enqueued(struct sp_flight *f)
{
	__u64 now = bpf_ktime_get_ns();

	/* A datagram is queued within microseconds of its stack entry: a flight
	 * that old is another datagram's, its key reused (a 16-bit IP ID wraps). */
	if (now - f->t_last > STALE_SEND_NS)
		return;
	if (__sync_val_compare_and_swap(&f->t_enq, 0, now))
		return;
	record_stage(f->path, SP_STAGE_IP_UDP, f->t_last, now);
	record_stage(f->path, SP_STAGE_UDP_RCV, f->t_udp, now);
	count(f->path, SP_CNT_ENQUEUED);
}

/* Socket enqueue. Kernels since 6.13 skip the notification when the queue
 * was not empty: those datagrams are counted, and their wait starts at the
 * last fragment's stack entry. */
static __always_inline int on_enqueue(const struct sock *sk, bool typed)
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
	if (!f)
		return 0;
	if (!f->t_enq)
		enqueued(f);
	/* A free head slot takes the queues' first datagram (not always this one:
	 * two enqueues can race); a read in progress still owns a taken slot. */
	if (proto == IPPROTO_TCP)
		note_stream_head(sk, typed, BPF_NOEXIST);
	else if (!claim_lone_head(sk, typed, &key))
		note_head(sk, typed, head_slot(sk, typed, false), BPF_NOEXIST);
	return 0;
}

/* Socket enqueue return (fexit/kretprobe): drops counted, and the enqueue
 * time of datagrams whose data-ready notification the kernel skipped. */
static __always_inline int on_udp_enqueue_ret(const struct sk_buff *skb, bool typed, int ret)
{
	struct sp_flight_key key = {};
	struct sp_flight *f;

	if (!skb || !(f = datagram_flight(skb, typed, &key)))
		return 0;
	if (ret) {
		count(f->path, SP_CNT_ENQUEUE_DROPS);
		drop_flight(f);
	} else if (!f->t_enq) {
		enqueued(f);
	}
	return 0;
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

/* ip_defrag returned: 0 means skb is now the whole datagram, and this call's
 * time is the reassembly's CPU. Who asked for the reassembly says whether
 * netfilter (conntrack) moved it to PREROUTING. */
static __always_inline int on_defrag_enter(void)
{
	__u32 zero = 0;
	__u64 *start = bpf_map_lookup_elem(&defrag_start, &zero);

	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_defrag_ret(const struct sk_buff *skb, bool typed, __u32 user,
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
static __always_inline int on_udp_rcv(const struct sk_buff *skb, bool typed)
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
static __always_inline int on_packet_rcv(const struct sk_buff *skb, bool typed)
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
	if (tail - head > SP_RING_PENDING)
		head = tail - SP_RING_PENDING;	/* the older ones were counted as ring_full */
	now = bpf_ktime_get_ns();
	for (__u32 i = 0; i < SP_RING_PENDING && head + i != tail; i++) {
		key = &pending->keys[(head + i) % SP_RING_PENDING];
		f = lookup_flight(key);
		if (f)
			ring_delivered(f, now);
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

/* kprobe flavour: remember the skb for the return probe. */
static __always_inline int save_skb(__u32 slot, const struct sk_buff *skb)
{
	__u64 *saved = bpf_map_lookup_elem(&entry_skb, &slot);

	if (saved)
		*saved = (__u64)skb;
	return 0;
}

static __always_inline const struct sk_buff *take_skb(__u32 slot)
{
	__u64 *saved = bpf_map_lookup_elem(&entry_skb, &slot), skb;

	if (!saved)
		return NULL;
	skb = *saved;
	*saved = 0;
	return (const struct sk_buff *)skb;
}

/* The receive call now returning handed the datagram of flight f over. */
static __always_inline void delivered(struct sp_flight *f)
{
	__u64 now = bpf_ktime_get_ns(), wait_from = f->t_enq, start, *t_enter;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (now - f->t_last > STALE_SEND_NS) {
		miss(SP_MISS_KEY_REUSED);	/* another datagram's flight: see enqueued() */
		return;
	}
	if (!wait_from) {
		count(f->path, SP_CNT_ENQUEUE_UNSEEN);
		wait_from = f->t_last;
	}
	t_enter = thread_stamp(&recv_start, tid);
	start = t_enter && *t_enter > wait_from ? *t_enter : wait_from;
	record_stage(f->path, SP_STAGE_SOCK_WAIT, wait_from, start);
	record_stage(f->path, SP_STAGE_RECV, start, now);
	record_stage(f->path, SP_STAGE_TOTAL, f->t_send, now);
	count(f->path, SP_CNT_DELIVERED);
}

/* The datagram this receive returned, then the next head of the queue. */
static __always_inline int on_datagram_recv(const struct sock *sk, bool typed, int ret)
{
	struct sp_flight_key *key, *slot;
	struct sp_flight *f;
	__u16 port;

	slot = head_slot(sk, typed, false);
	key = slot && slot->proto ? slot : NULL;
	if (!key) {
		port = bpf_htons(READ(typed, sk, __sk_common.skc_num));
		key = bpf_map_lookup_elem(&last_arrival, &port);
	}
	f = key ? lookup_flight(key) : NULL;
	if (f && f->len != ret)
		miss(SP_MISS_PAIR_MISMATCH);
	else if (f && f->t_last)
		delivered(f);
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
static __always_inline int on_stream_recv(const struct sock *sk, bool typed)
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
	if (f && f->t_last)
		delivered(f);
	if (f)
		drop_flight(f);
	bpf_map_delete_elem(&stream_head, &id);
	note_stream_head(sk, typed, BPF_ANY);
	return 0;
}

static __always_inline int on_recv_return(const struct sock *sk, bool typed, int ret, int flags)
{
	__u16 proto;

	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	proto = sock_proto4(sk, typed);
	if (proto == IPPROTO_UDP)
		return on_datagram_recv(sk, typed, ret);
	return proto == IPPROTO_TCP ? on_stream_recv(sk, typed) : 0;
}

/* kprobe flavour of a receive: its socket and flags, kept for the return. */
static __always_inline int recv_args_save(const struct sock *sk, int flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct recv_args args = { .sk = (__u64)sk, .flags = flags };

	bpf_map_update_elem(&recv_args, &tid, &args, BPF_ANY);
	return 0;
}

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

/* A send starts; a ring receiver's send also means it has read its ring. */
static __always_inline int on_send_enter(void)
{
	on_ring_wake(false);
	return stamp_thread(&send_start);
}

/* Send and receive calls: classic syscall tracepoints fire only for these. */
SEC("tracepoint/syscalls/sys_enter_sendto")
int tp_sys_enter_sendto(void *ctx) { return on_send_enter(); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int tp_sys_enter_sendmsg(void *ctx) { return on_send_enter(); }

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int tp_sys_enter_sendmmsg(void *ctx) { return on_send_enter(); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int tp_sys_enter_recvfrom(void *ctx) { return stamp_thread(&recv_start); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int tp_sys_enter_recvmsg(void *ctx) { return stamp_thread(&recv_start); }

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int tp_sys_enter_recvmmsg(void *ctx) { return stamp_thread(&recv_start); }

/* Packet and socket hooks: tp_btf first, raw_tp as the fallback. */
SEC("tp_btf/net_dev_queue")
int BPF_PROG(tp_btf_net_dev_queue, struct sk_buff *skb) { return on_dev_queue(skb, TYPED); }

SEC("raw_tp/net_dev_queue")
int BPF_PROG(raw_tp_net_dev_queue, struct sk_buff *skb) { return on_dev_queue(skb, UNTYPED); }

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(tp_btf_net_dev_start_xmit, struct sk_buff *skb) { return on_dev_xmit(skb, TYPED); }

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(raw_tp_net_dev_start_xmit, struct sk_buff *skb)
{
	return on_dev_xmit(skb, UNTYPED);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(tp_btf_netif_rx, struct sk_buff *skb) { return on_dev_rx(skb, TYPED); }

SEC("raw_tp/netif_rx")
int BPF_PROG(raw_tp_netif_rx, struct sk_buff *skb) { return on_dev_rx(skb, UNTYPED); }

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(tp_btf_netif_receive_skb, struct sk_buff *skb)
{
	return on_stack_rx(skb, TYPED);
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(raw_tp_netif_receive_skb, struct sk_buff *skb)
{
	return on_stack_rx(skb, UNTYPED);
}

SEC("fentry/sock_def_readable")
int BPF_PROG(fentry_sock_def_readable, struct sock *sk) { return on_enqueue(sk, TYPED); }

SEC("kprobe/sock_def_readable")
int BPF_KPROBE(kprobe_sock_def_readable, struct sock *sk) { return on_enqueue(sk, UNTYPED); }

SEC("tp_btf/sk_data_ready")
int BPF_PROG(tp_btf_sk_data_ready, struct sock *sk) { return on_enqueue(sk, TYPED); }

SEC("raw_tp/sk_data_ready")
int BPF_PROG(raw_tp_sk_data_ready, struct sock *sk) { return on_enqueue(sk, UNTYPED); }

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	return on_recv_return(sk, TYPED, ret, flags);
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(kprobe_udp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags)
{
	return recv_args_save(sk, flags);
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(kretprobe_udp_recvmsg, int ret) { return recv_args_return(ret); }

SEC("fexit/tcp_recvmsg")
int BPF_PROG(fexit_tcp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	return on_recv_return(sk, TYPED, ret, flags);
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(kprobe_tcp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags)
{
	return recv_args_save(sk, flags);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(kretprobe_tcp_recvmsg, int ret) { return recv_args_return(ret); }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_btf_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_recv_return(sk, TYPED, ret, flags);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(raw_tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_recv_return(sk, UNTYPED, ret, flags);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int tp_sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx) { return on_recvmmsg_ret(ctx->ret); }

/* Wake-ups of ring receivers: they wait in poll (or epoll), never in recv. */
SEC("tracepoint/syscalls/sys_exit_poll")
int tp_sys_exit_poll(void *ctx) { return on_ring_wake(true); }

SEC("tracepoint/syscalls/sys_exit_ppoll")
int tp_sys_exit_ppoll(void *ctx) { return on_ring_wake(true); }

SEC("tracepoint/syscalls/sys_exit_epoll_wait")
int tp_sys_exit_epoll_wait(void *ctx) { return on_ring_wake(true); }

/* Finer hooks, on kernels with BPF trampolines (fentry/fexit) or kprobes. */
SEC("fentry/ip_do_fragment")
int BPF_PROG(fentry_ip_do_fragment, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	return on_fragment(tx_ip(skb, TYPED));
}

SEC("kprobe/ip_do_fragment")
int BPF_KPROBE(kprobe_ip_do_fragment, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	return on_fragment(tx_ip(skb, UNTYPED));
}

SEC("fentry/ip_rcv")
int BPF_PROG(fentry_ip_rcv, struct sk_buff *skb) { return on_ip_rcv(rx_ip(skb, TYPED)); }

SEC("kprobe/ip_rcv")
int BPF_KPROBE(kprobe_ip_rcv, struct sk_buff *skb) { return on_ip_rcv(rx_ip(skb, UNTYPED)); }

SEC("fentry/ip_local_deliver")
int BPF_PROG(fentry_ip_local_deliver, struct sk_buff *skb)
{
	return on_local_in(tx_ip(skb, TYPED));
}

SEC("kprobe/ip_local_deliver")
int BPF_KPROBE(kprobe_ip_local_deliver, struct sk_buff *skb)
{
	return on_local_in(tx_ip(skb, UNTYPED));
}

SEC("fentry/ip_defrag")
int BPF_PROG(fentry_ip_defrag, struct net *net, struct sk_buff *skb, u32 user)
{
	return on_defrag_enter();
}

SEC("fentry/ip_finish_output2")
int BPF_PROG(fentry_ip_finish_output2, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	return on_output(tx_ip(skb, TYPED));
}

SEC("kprobe/ip_finish_output2")
int BPF_KPROBE(kprobe_ip_finish_output2, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	return on_output(tx_ip(skb, UNTYPED));
}

SEC("fexit/ip_defrag")
int BPF_PROG(fexit_ip_defrag, struct net *net, struct sk_buff *skb, u32 user, int ret)
{
	return on_defrag_ret(skb, TYPED, user, ret);
}

SEC("kprobe/ip_defrag")
int BPF_KPROBE(kprobe_ip_defrag, struct net *net, struct sk_buff *skb, u32 user)
{
	on_defrag_enter();
	return save_skb(ARG_IP_DEFRAG, skb);
}

/* The return probe cannot see the caller's user: counted as local delivery
 * only when the conntrack defrag module is absent (the loader says). */
SEC("kretprobe/ip_defrag")
int BPF_KRETPROBE(kretprobe_ip_defrag, int ret)
{
	return on_defrag_ret(take_skb(ARG_IP_DEFRAG), UNTYPED, IP_DEFRAG_LOCAL_DELIVER, ret);
}

SEC("fentry/udp_rcv")
int BPF_PROG(fentry_udp_rcv, struct sk_buff *skb) { return on_udp_rcv(skb, TYPED); }

SEC("kprobe/udp_rcv")
int BPF_KPROBE(kprobe_udp_rcv, struct sk_buff *skb) { return on_udp_rcv(skb, UNTYPED); }

SEC("fexit/__udp_enqueue_schedule_skb")
int BPF_PROG(fexit_udp_enqueue, struct sock *sk, struct sk_buff *skb, int ret)
{
	return on_udp_enqueue_ret(skb, TYPED, ret);
}

SEC("kprobe/__udp_enqueue_schedule_skb")
int BPF_KPROBE(kprobe_udp_enqueue, struct sock *sk, struct sk_buff *skb)
{
	return save_skb(ARG_UDP_ENQUEUE, skb);
}

SEC("kretprobe/__udp_enqueue_schedule_skb")
int BPF_KRETPROBE(kretprobe_udp_enqueue, int ret)
{
	return on_udp_enqueue_ret(take_skb(ARG_UDP_ENQUEUE), UNTYPED, ret);
}

SEC("fentry/tpacket_rcv")
int BPF_PROG(fentry_tpacket_rcv, struct sk_buff *skb) { return on_packet_rcv(skb, TYPED); }

SEC("kprobe/tpacket_rcv")
int BPF_KPROBE(kprobe_tpacket_rcv, struct sk_buff *skb) { return on_packet_rcv(skb, UNTYPED); }

SEC("fentry/packet_rcv")
int BPF_PROG(fentry_packet_rcv, struct sk_buff *skb) { return on_packet_rcv(skb, TYPED); }

SEC("kprobe/packet_rcv")
int BPF_KPROBE(kprobe_packet_rcv, struct sk_buff *skb) { return on_packet_rcv(skb, UNTYPED); }
