// SPDX-License-Identifier: GPL-2.0
/*
 * bucket_of() of bpf/buckets.h, the code the BPF programs run, built for user
 * space: reads one decimal u64 a line on stdin, prints "<bucket> <out of
 * range>" a line (out of range: 1 when the BPF side would count the value as
 * out_of_range). tests/test_bucket_c.py compares it with profiler/buckets.py.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static int out_of_range;

#define SP_OUT_OF_RANGE() (out_of_range = 1)
#include "buckets.h"

int main(void)
{
	char line[64];

	while (fgets(line, sizeof(line), stdin)) {
		char *end;
		__u64 v = strtoull(line, &end, 10);
		__u32 bucket;

		if (end == line) {
			fprintf(stderr, "not a number: %s", line);
			return 2;
		}
		out_of_range = 0;
		bucket = bucket_of(v);
		printf("%" PRIu32 " %d\n", (uint32_t)bucket, out_of_range);
	}
	return 0;
}
