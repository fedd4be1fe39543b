// SPDX-License-Identifier: GPL-2.0
/* Loads probe.bpf.o, attaches every program in it (kprobe, fentry, fexit on udp_rcv), sends
 * datagrams to 127.0.0.1:9 and prints each counter of the object's .bss as NAME=VALUE.
 * Exits 0 only when every program attached and every counter saw every datagram.
 * Usage: probe_loader OBJECT [DATAGRAMS]. Built with the host's clang and libbpf. */
#include <arpa/inet.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJECT [DATAGRAMS]\n", argv[0]);
		return 2;
	}
	int datagrams = argc > 2 ? atoi(argv[2]) : 5;
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || libbpf_get_error(obj)) {
		fprintf(stderr, "open %s failed\n", argv[1]);
		return 1;
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "load %s failed\n", argv[1]);
		return 1;
	}
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link = bpf_program__attach(prog);
		if (!link || libbpf_get_error(link)) {
			fprintf(stderr, "attach %s failed\n", bpf_program__name(prog));
			return 1;
		}
		printf("attached %s (%s)\n", bpf_program__name(prog), bpf_program__section_name(prog));
	}

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < datagrams; i++) {
		if (sendto(fd, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)) != 1) {
			perror("sendto 127.0.0.1:9");
			return 1;
		}
	}
	close(fd);

	struct bpf_map *bss = NULL, *map;
	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t len = strlen(name);
		if (len >= 4 && strcmp(name + len - 4, ".bss") == 0)
			bss = map;
	}
	if (!bss) {
		fprintf(stderr, "no .bss map\n");
		return 1;
	}
	size_t size = bpf_map__value_size(bss);
	unsigned char *value = calloc(1, size);
	int zero = 0;
	if (bpf_map__lookup_elem(bss, &zero, sizeof(zero), value, size, 0)) {
		fprintf(stderr, "lookup .bss failed\n");
		return 1;
	}
	/* Walk the .bss datasec in BTF to name each counter. */
	struct btf *btf = bpf_object__btf(obj);
	const struct btf_type *sec = btf__type_by_id(btf, bpf_map__btf_value_type_id(bss));
	const struct btf_var_secinfo *vsi = btf_var_secinfos(sec);
	int ok = 1;
	for (int i = 0; i < btf_vlen(sec); i++, vsi++) {
		const struct btf_type *var = btf__type_by_id(btf, vsi->type);
		unsigned long long hits;
		memcpy(&hits, value + vsi->offset, sizeof(hits));
		printf("%s=%llu\n", btf__name_by_offset(btf, var->name_off), hits);
		if (hits < (unsigned long long)datagrams)
			ok = 0;
	}
	return ok ? 0 : 1;
}
