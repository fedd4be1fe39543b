/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared between the BPF programs and Python (profiler/abi.py parses this
 * file: keep to plain #defines of integers, enums with implicit values and
 * structs of __u8..__u64 fields, arrays of them and structs defined above).
 * The table sizes can be overridden at build time (-DSP_FLIGHT_ENTRIES=8:
 * the tiny-table build of tests/test_overflow.py); Python reads the default,
 * and the flight table's real size from the loaded map.
 */
#ifndef __STACKPROF_H
#define __STACKPROF_H

/* Log-linear buckets: values below SP_SUB_BUCKETS ns are exact, above that
 * each power of two is split into SP_SUB_BUCKETS equal buckets (<= 1.6% wide). */
#define SP_SUB_BITS 6
#define SP_SUB_BUCKETS 64
#define SP_MAX_EXP 36
#define SP_NBUCKETS 1984

#ifndef SP_FLIGHT_ENTRIES
#define SP_FLIGHT_ENTRIES 16384
#endif
/* Four, not two: two clients' consecutive sets (see flight_set) drift into
 * step now and then, and a third flight passing then evicted one of theirs. */
#define SP_FLIGHT_WAYS 4
#ifndef SP_THREAD_ENTRIES
#define SP_THREAD_ENTRIES 4096
#endif
#define SP_MAX_NETNS 4
#ifndef SP_RING_PENDING
#define SP_RING_PENDING 64
#endif

/* Which way a datagram goes: to the service port, or from it; and the two
 * residence paths, one sample per request answered: on the host that serves
 * the ports (SERVER: request in -> its response out) and on the host of the
 * clients (CLIENT: request sent -> its response received). */
enum sp_path {
	SP_PATH_REQUEST,
	SP_PATH_RESPONSE,
	SP_PATH_SERVER,
	SP_PATH_CLIENT,
	SP_NPATHS,
};

/* The datagram paths (request, response): the ones flights follow. */
#define SP_NDGRAM_PATHS 2

/* Stages of one datagram, in the order its time is spent; TOTAL spans them all. */
enum sp_stage {
	SP_STAGE_TOTAL,
	SP_STAGE_SEND,
	SP_STAGE_QDISC,
	SP_STAGE_DRIVER,
	SP_STAGE_BACKLOG,
	SP_STAGE_FRAG_TRAIN,
	SP_STAGE_IP_UDP,
	SP_STAGE_SOCK_WAIT,
	SP_STAGE_RECV,
	/* Finer stages, where the kernel lets fentry or kprobes see them. */
	SP_STAGE_UDP_IP_TX,
	SP_STAGE_FRAGMENT,
	SP_STAGE_NEIGH_TX,
	SP_STAGE_IP_RCV,
	SP_STAGE_IP_ROUTE,
	SP_STAGE_IP_RX,
	SP_STAGE_REASSEMBLY,
	SP_STAGE_IP_LOCAL,
	SP_STAGE_UDP_RCV,
	/* PF_PACKET ring receivers, in place of ip_udp, sock_wait and recv. */
	SP_STAGE_PKT_DELIVER,
	SP_STAGE_RING_WAIT,
	/* A datagram whose receiver is off the traced host: first fragment queued
	 * -> its last fragment's driver transmit. */
	SP_STAGE_TX_FRAGS,
	/* Residence paths (server, client). */
	SP_STAGE_RX_STACK,	/* device receive -> socket enqueue (or ring delivery) */
	SP_STAGE_APP,		/* request's receive returns -> response's send syscall */
	SP_STAGE_TX_STACK,	/* send syscall -> last fragment's driver transmit */
	SP_STAGE_AWAY,		/* request's last fragment out -> response's first in */
	/* --detail lean, whose hooks leave the boundaries between them out:
	 * qdisc+driver+backlog, and sock_wait+recv. */
	SP_STAGE_TO_STACK,
	SP_STAGE_SOCK_RECV,
	SP_NSTAGES,
};

/* Extra (non-latency) histograms, after the stage ones. */
enum sp_extra_hist {
	SP_HIST_FRAGS,
	SP_HIST_BATCH,
	SP_NEXTRA_HISTS,
};

/* How the receiver reads: a socket, or a PF_PACKET ring that hands over frame
 * by frame (TPACKET_V2: seen at its next poll return or send) or block by
 * block (TPACKET_V3: seen only when a poll returns a retired block). */
enum sp_ring_kind {
	SP_RING_NONE,
	SP_RING_FRAMES,
	SP_RING_BLOCKS,
	SP_NRING_KINDS,
};

/* Per-path datagram counters. */
enum sp_path_counter {
	SP_CNT_SENT,
	SP_CNT_FRAGMENTED,
	SP_CNT_ENQUEUED,
	SP_CNT_ENQUEUE_UNSEEN,
	SP_CNT_DELIVERED,
	SP_CNT_ENQUEUE_DROPS,
	SP_CNT_DEFRAG_LOCAL,
	SP_CNT_DEFRAG_NETFILTER,
	SP_CNT_RING_DELIVERED,
	SP_CNT_ARRIVED,		/* flights begun at a receive: sent off the traced host */
	SP_CNT_RECEIVE_ONLY,	/* delivered, followed from their receive only */
	SP_CNT_SEND_ONLY,	/* ended at their last fragment's driver transmit */
	SP_CNT_STACK_UNSEEN,	/* delivered with no stack entry seen (GRO merged them) */
	SP_CNT_SAMPLED_OUT,	/* sent, but left out of the sample (--sample): no flight */
	SP_NPATH_COUNTERS,
};

/* Events that could not be recorded. */
enum sp_miss {
	SP_MISS_FLIGHT_FULL,
	SP_MISS_KEY_REUSED,
	SP_MISS_PAIR_MISMATCH,
	SP_MISS_OUT_OF_RANGE,
	SP_MISS_RING_FULL,
	SP_MISS_THREAD_SLOT,
	SP_MISS_PAIRS_FULL,	/* a request could not be remembered for its response */
	SP_MISS_PAIR_UNSURE,	/* a receive paired by arrivals when all those kept were in flight */
	SP_NMISS,
};

/* Why the kernel dropped a packet of a followed datagram: its skb_drop_reason
 * (skb:kfree_skb), mapped to these few causes (bpf/drops.bpf.h). */
enum sp_drop_cause {
	SP_DROP_INCOMPLETE,	/* reassembly timed out or gave up: the datagram never became whole */
	SP_DROP_DUPLICATE,	/* a fragment already there (or of a datagram already whole): no loss */
	SP_DROP_SOCKET_FULL,	/* receive buffer (or the protocol's memory) full */
	SP_DROP_NO_SOCKET,	/* no socket on the port */
	SP_DROP_SOCKET_FILTER,	/* the socket's filter refused it */
	SP_DROP_NETFILTER,	/* a netfilter (nftables, iptables) rule */
	SP_DROP_CHECKSUM,	/* a bad IP or UDP checksum */
	SP_DROP_BACKLOG_FULL,	/* the CPU's receive backlog full (netdev_max_backlog) */
	SP_DROP_QDISC,		/* the transmit queueing discipline */
	SP_DROP_OTHER,		/* any other reason, or none given */
	SP_NDROP_CAUSES,
};

/* A datagram in flight, keyed as IP reassembly keys fragments (the skb changes
 * identity during reassembly); unfragmented datagrams add their ports, since
 * some kernels give DF datagrams an IP ID of 0. */
struct sp_flight_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;
	__u8 proto;
	__u8 fragmented;
	__u16 sport;
	__u16 dport;
};

/* Boundary timestamps of one datagram (0: not seen yet). */
struct sp_flight {
	__u64 t_send;
	__u64 t_queue;
	__u64 t_xmit;
	__u64 t_rx;
	__u64 t_stack;
	__u64 t_last;
	__u64 t_enq;
	__u64 t_defrag;
	__u64 t_udp;
	__u64 t_pkt;
	__u64 t_ip_rcv;
	__u64 t_local_in;
	__u64 t_xmit_last;	/* driver transmit of the last fragment */
	__u32 path;
	__u32 frag_payload;
	__u32 len;
	__u16 sport;	/* the UDP ports, which later fragments do not carry */
	__u16 dport;
	__u32 origin;	/* enum sp_origin */
};

/* Where a flight began: at a traced send, or at a receive (sent elsewhere). */
enum sp_origin {
	SP_ORIGIN_SEND,
	SP_ORIGIN_RECEIVE,
	SP_NORIGINS,
};

/* A request remembered for its response, keyed by the client's address and
 * port: on the server, when its receive returned; on the client, when its
 * last fragment left. */
struct sp_pair_key {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct sp_pair {
	__u64 t_begin;	/* server: first fragment's receive; client: send syscall */
	__u64 t_enq;	/* server: socket enqueue (or ring delivery) */
	__u64 t_recv;	/* server: receive return; client: last fragment out */
};

/* A slot of the in-flight table (key.proto 0: free). */
struct sp_flight_slot {
	struct sp_flight_key key;
	struct sp_flight f;
};

/* Set by the loader before load (rodata): filters cost nothing when off. */
struct sp_config {
	__u32 port_lo;
	__u32 port_hi;
	__u32 filter_netns;
	__u32 netns[SP_MAX_NETNS];
	__u32 filter_tgid;
	__u32 tgid;
	__u32 filter_cgroup;
	__u32 ring_receiver;
	__u32 fine_tx;	/* ip_do_fragment or ip_finish_output2 hooked: split the send */
	__u32 sock_storage;	/* sockets reached typed everywhere: heads in their storage */
	__u32 drop_hook;	/* skb:kfree_skb hooked: drops are counted there, by reason */
	__u32 residence;	/* pair requests with responses: server and client paths */
	__u32 rx_hook;		/* a device receive is hooked: flights from afar begin there */
	__u64 cgroup_id;
	__u32 sample;	/* follow 1 datagram in this many, chosen by its key (0, 1: all) */
	__u32 lean;	/* --detail lean: record the merged stages (bpf/lean.bpf.h) */
};

/* Everything user space reads, in one mmapped global (.bss). */
struct sp_stats {
	__u64 path_counters[SP_NPATHS][SP_NPATH_COUNTERS];
	__u64 missed[SP_NMISS];
	/* Datagrams that never reached the receiver, by cause: INCOMPLETE ones
	 * (reassembly timed out), the others dropped whole. */
	__u64 lost[SP_NPATHS][SP_NDROP_CAUSES];
	/* Fragments of followed datagrams dropped, by cause (the datagram is then
	 * incomplete, unless the fragment was a DUPLICATE). */
	__u64 frags_dropped[SP_NPATHS][SP_NDROP_CAUSES];
	__u64 hist[SP_NPATHS * (SP_NSTAGES + SP_NEXTRA_HISTS)][SP_NBUCKETS];
	/* Per histogram, the exact sum of the values recorded in it (ns for the
	 * stages): a mean or Prometheus' _sum, not the buckets' midpoints. */
	__u64 sum[SP_NPATHS * (SP_NSTAGES + SP_NEXTRA_HISTS)];
};

#endif /* __STACKPROF_H */
