// SPDX-License-Identifier: GPL-2.0
/*
 * The floor any hook-based tracer pays: one empty program per program of
 * stackprof.bpf.c, with the same SEC() and the same name, generated from the
 * same list (programs.def), so that the hook choice made on stackprof's object
 * (profiler.loader.choose_hooks) selects the same attachments here, whichever
 * kinds it chose. benchmarks/overhead.py attaches these to measure the cost
 * of dispatch alone. Every program takes a plain context pointer, which every
 * attach kind accepts; their arguments and handler calls are dropped.
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

#define EMPTY(kind, target, name) \
	SEC(kind "/" target)      \
	int name(void *ctx)       \
	{                         \
		body();           \
		return 0;         \
	}

#define SP_TRACEPOINT(target, name, args, call) EMPTY("tracepoint", target, name)
#define SP_TP_BTF(target, name, args, call) EMPTY("tp_btf", target, name)
#define SP_RAW_TP(target, name, args, call) EMPTY("raw_tp", target, name)
#define SP_FENTRY(target, name, args, call) EMPTY("fentry", target, name)
#define SP_FEXIT(target, name, args, call) EMPTY("fexit", target, name)
#define SP_KPROBE(target, name, args, call) EMPTY("kprobe", target, name)
#define SP_KRETPROBE(target, name, args, call) EMPTY("kretprobe", target, name)

#include "programs.def"
