/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Hashing a flight key: the mixer the flight table's sets and the residence
 * pairs use, and the sample hash of --sample N. A datagram is followed when
 * the sample hash of its key, taken as numbers in wire order (addresses, IP
 * ID and ports big-endian as on the wire, so that hosts of any byte order
 * agree), picks it: every hook, and a stackprof on the other host, picks the
 * same datagrams with no shared state. Any fragment's key is its datagram's
 * (ports are 0 in a fragmented key), so every packet hook can tell a datagram
 * left out, from its headers alone. profiler/sampling.py computes the same.
 */
#ifndef __STACKPROF_KEYHASH_BPF_H
#define __STACKPROF_KEYHASH_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include "stackprof.h"
#include "filters.bpf.h"

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

/* Not flight_set's hash (which leaves the IP ID out): a seed of its own. */
#define SAMPLE_SEED 0x9e3779b9u

static __always_inline __u32 sample_hash(const struct sp_flight_key *k)
{
	__u32 h = mix32(SAMPLE_SEED ^ bpf_ntohl(k->saddr));

	h = mix32(h ^ bpf_ntohl(k->daddr));
	h = mix32(h ^ ((__u32)bpf_ntohs(k->id) << 16 | (__u32)k->proto << 8 | k->fragmented));
	h = mix32(h ^ ((__u32)bpf_ntohs(k->sport) << 16 | bpf_ntohs(k->dport)));
	return h;
}

/* Whether the datagram of key is followed. With cfg.sample 0 or 1 (rodata)
 * every one is, and the verifier prunes the hash away. */
static __always_inline bool sampled(const struct sp_flight_key *key)
{
	return cfg.sample <= 1 || sample_hash(key) % cfg.sample == 0;
}

#endif /* __STACKPROF_KEYHASH_BPF_H */
