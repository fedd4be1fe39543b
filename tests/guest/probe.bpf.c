// SPDX-License-Identifier: GPL-2.0
/* Smallest real check that the guest kernel runs the hook types the host kernel lacks:
 * a kprobe, an fentry and an fexit on udp_rcv, each counting its hits in .bss. Built by
 * test_guest_smoke.py with the host's clang and loaded in the guest with bpftool. Needs no
 * vmlinux.h: the programs do not read their arguments. */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

__u64 kprobe_hits = 0;
__u64 fentry_hits = 0;
__u64 fexit_hits = 0;

SEC("kprobe/udp_rcv")
int probe_kprobe(void *ctx)
{
	__sync_fetch_and_add(&kprobe_hits, 1);
	return 0;
}

SEC("fentry/udp_rcv")
int probe_fentry(void *ctx)
{
	__sync_fetch_and_add(&fentry_hits, 1);
	return 0;
}

SEC("fexit/udp_rcv")
int probe_fexit(void *ctx)
{
	__sync_fetch_and_add(&fexit_hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
