"""Resolving kernel function names to kallsyms symbols, on sample text (no root needed)."""

from __future__ import annotations

import pytest

from profiler import kallsyms
from profiler.hooks import FUNCTIONS

SAMPLE = """\
ffffffff81ff6a80 T ip_rcv
ffffffff81ff6a70 t __pfx_ip_rcv
ffffffff81ff6000 t ip_rcv_core.isra.0
ffffffff812439cf t ip_defrag.cold
ffffffff81ff74a0 T ip_defrag
ffffffff81ff7000 t udp_queue_rcv_one_skb.constprop.0
ffffffff81ff7100 t udp_queue_rcv_one_skb.constprop.0.cold
ffffffff81ff7200 t udp_queue_rcv_one_skb.isra.0
ffffffff81ff7300 t only_cold.cold
ffffffff81ff7400 t split.part.0
ffffffff81ff7500 t lto_local.llvm.1234567
ffffffff81ff7600 d udp_table_data
ffffffff81ff7700 t clone_twice.constprop.0.isra.0
ffffffffc0201000 t tpacket_rcv\t[af_packet]
ffffffffc0201100 t tpacket_rcv.cold\t[af_packet]
0000000000000000 T hidden_address
"""


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("ip_rcv", "ip_rcv"),
        ("ip_rcv_core", "ip_rcv_core.isra.0"),
        ("ip_defrag", "ip_defrag"),
        ("udp_queue_rcv_one_skb", "udp_queue_rcv_one_skb.constprop.0"),
        ("split", "split.part.0"),
        ("lto_local", "lto_local.llvm.1234567"),
        ("clone_twice", "clone_twice.constprop.0.isra.0"),
        ("tpacket_rcv", "tpacket_rcv"),
        ("hidden_address", "hidden_address"),
    ],
)
def test_resolves(name: str, symbol: str) -> None:
    assert kallsyms.resolve_in(SAMPLE, name) == symbol


@pytest.mark.parametrize("name", ["only_cold", "absent", "udp_table_data", "ip_rcv.isra.0", ""])
def test_absent_cold_or_not_code(name: str) -> None:
    assert kallsyms.resolve_in(SAMPLE, name) is None


def test_cold_never_chosen() -> None:
    table = kallsyms.index(SAMPLE.splitlines())
    assert all(".cold" not in s for symbols in table.values() for s in symbols)


def test_exact_name_preferred_over_clone() -> None:
    text = "1 t foo.isra.0\n2 T foo\n3 t foo.constprop.0\n"
    assert kallsyms.resolve_in(text, "foo") == "foo"


def test_fewest_suffixes_preferred() -> None:
    assert kallsyms.choose("foo", ["foo.constprop.0.isra.0", "foo.part.0"]) == "foo.part.0"


@pytest.mark.parametrize(
    ("symbol", "base"),
    [
        ("udp_rcv", "udp_rcv"),
        ("x.isra.0", "x"),
        ("x.constprop.12", "x"),
        ("x.cold", None),
        ("x.isra.0.cold", None),
        ("x.unknown.0", None),
    ],
)
def test_base_name(symbol: str, base: str | None) -> None:
    assert kallsyms.base_name(symbol) == base


def test_running_kernel_reader_is_cached() -> None:
    kallsyms._table.cache_clear()
    first = kallsyms._table(FUNCTIONS)
    assert kallsyms._table(FUNCTIONS) is first
    kallsyms.resolve(min(FUNCTIONS), FUNCTIONS)
    assert kallsyms._table.cache_info().misses == 1


def test_only_the_wanted_names_are_indexed() -> None:
    """An index of every symbol held ~30 MB of strings for the few dozen asked for."""
    table = kallsyms.index(SAMPLE.splitlines(), {"ip_rcv", "split", "absent"})
    assert table == {"ip_rcv": ["ip_rcv"], "split": ["split.part.0"]}
    assert kallsyms.index(SAMPLE.splitlines(), set()) == {}


def test_running_kernel_has_udp_rcv() -> None:
    """/proc/kallsyms lists names for any user (addresses are hidden without root)."""
    assert kallsyms.resolve("udp_rcv") == "udp_rcv"
    assert kallsyms.resolve("no_such_function_in_any_kernel") is None
