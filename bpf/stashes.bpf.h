/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What an entry program keeps for the return program of the same call: a
 * return probe (kretprobe) sees only the return value, so the kprobe flavour
 * of a hook stashes the call's arguments at entry (fexit programs get them
 * back typed); and ip_defrag's entry time, kept by both flavours. Softirq work
 * does not nest on one CPU, so its stashes are per CPU; a receive can sleep,
 * so its stash is per thread.
 */
#ifndef __STACKPROF_STASHES_BPF_H
#define __STACKPROF_STASHES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "stackprof.h"

/* kprobe flavour only: the skb a probed call got, for its return probe
 * (softirq work does not nest on one CPU). */
enum { ARG_IP_DEFRAG, ARG_UDP_ENQUEUE, NARGS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NARGS);
	__type(key, __u32);
	__type(value, __u64);
} entry_skb SEC(".maps");

/* When the running ip_defrag call started, per CPU (softirq work does not nest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} defrag_start SEC(".maps");

/* kprobe flavour only: the socket and flags of a thread's receive call
 * (udp_recvmsg, tcp_recvmsg), for its return probe (a receive can sleep, so
 * by thread, not by CPU). */
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

/* kprobe flavour of a receive: its socket and flags, kept for the return. */
static __always_inline int recv_args_save(const struct sock *sk, int flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct recv_args args = { .sk = (__u64)sk, .flags = flags };

	bpf_map_update_elem(&recv_args, &tid, &args, BPF_ANY);
	return 0;
}

#endif /* __STACKPROF_STASHES_BPF_H */
