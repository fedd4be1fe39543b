/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What to follow: the loader's configuration (cfg, rodata set before load)
 * and the filters it drives (service ports, network namespaces, pid, cgroup).
 * Being constants, filters that are off cost nothing once the verifier has
 * pruned them. The other switches of cfg (ring_receiver, fine_tx,
 * sock_storage) are read where their concern is.
 */
#ifndef __STACKPROF_FILTERS_BPF_H
#define __STACKPROF_FILTERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "stackprof.h"
#include "headers.bpf.h"

const volatile struct sp_config cfg = {};

/* Whether flights may begin, set by user space once every hook is attached and
 * cleared before any is detached (its own section, so its own mmapped map): a
 * datagram sent while hooks come and go is followed whole or not at all. */
volatile __u32 armed SEC(".data.armed") = 0;

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

/* The path of a packet of the service ports (to them: a request), -1 for others. */
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

#endif /* __STACKPROF_FILTERS_BPF_H */
