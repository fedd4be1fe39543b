// SPDX-License-Identifier: GPL-2.0
/*
 * The floor any hook-based tracer pays: one empty program per program of
 * stackprof.bpf.c, with the same SEC() and the same name, so that the hook
 * choice made on stackprof's object (profiler.loader.choose_hooks) selects
 * the same attachments here. benchmarks/overhead.py attaches these to
 * measure the cost of dispatch alone. Keep in step with stackprof.bpf.c.
 *
 * Built again with -DCLOCK (clock.bpf.o): each program then takes one
 * timestamp and keeps it per CPU, so that the same run also measures what a
 * timestamp costs on these hooks, the unit every stage boundary pays.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#ifdef CLOCK
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_stamp SEC(".maps");

static __always_inline void body(void)
{
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&last_stamp, &zero);

	if (t)
		*t = bpf_ktime_get_ns();
}
#else
static __always_inline void body(void) {}
#endif

#define EMPTY(sec, name) \
	SEC(sec) \
	int name(void *ctx) \
	{ \
		body(); \
		return 0; \
	}

EMPTY("tracepoint/syscalls/sys_enter_sendto", tp_sys_enter_sendto)
EMPTY("tracepoint/syscalls/sys_enter_sendmsg", tp_sys_enter_sendmsg)
EMPTY("tracepoint/syscalls/sys_enter_sendmmsg", tp_sys_enter_sendmmsg)
EMPTY("tracepoint/syscalls/sys_enter_recvfrom", tp_sys_enter_recvfrom)
EMPTY("tracepoint/syscalls/sys_enter_recvmsg", tp_sys_enter_recvmsg)
EMPTY("tracepoint/syscalls/sys_enter_recvmmsg", tp_sys_enter_recvmmsg)

EMPTY("tp_btf/net_dev_queue", tp_btf_net_dev_queue)
EMPTY("raw_tp/net_dev_queue", raw_tp_net_dev_queue)
EMPTY("tp_btf/net_dev_start_xmit", tp_btf_net_dev_start_xmit)
EMPTY("raw_tp/net_dev_start_xmit", raw_tp_net_dev_start_xmit)
EMPTY("tp_btf/netif_rx", tp_btf_netif_rx)
EMPTY("raw_tp/netif_rx", raw_tp_netif_rx)
EMPTY("tp_btf/netif_receive_skb", tp_btf_netif_receive_skb)
EMPTY("raw_tp/netif_receive_skb", raw_tp_netif_receive_skb)
EMPTY("tp_btf/sk_data_ready", tp_btf_sk_data_ready)
EMPTY("raw_tp/sk_data_ready", raw_tp_sk_data_ready)
EMPTY("tp_btf/sock_recv_length", tp_btf_sock_recv_length)
EMPTY("raw_tp/sock_recv_length", raw_tp_sock_recv_length)
