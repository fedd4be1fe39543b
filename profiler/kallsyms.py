"""Kernel function names as /proc/kallsyms actually spells them.

The compiler may rename a static function it has specialised (``ip_rcv_core.isra.0``,
``udp_queue_rcv_one_skb.constprop.0``, ``foo.part.0``); a kprobe must then name the symbol
that exists, not the source name. ``.cold`` symbols are the out-of-line unlikely branches of a
function, not an entry point, so they are never chosen.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from pathlib import Path

KALLSYMS = Path("/proc/kallsyms")

# Symbol types of code: text (t/T) and weak (w/W).
_CODE_TYPES = frozenset("tTwW")

# A source name followed by one or more clone suffixes gcc or clang add.
_CLONE = re.compile(r"^(?P<base>[^.]+)(?:\.(?:isra|constprop|part|llvm)\.\d+)+$")


def base_name(symbol: str) -> str | None:
    """The source name a symbol stands for, or None if it is not an entry point (.cold)."""
    if "." not in symbol:
        return symbol
    match = _CLONE.match(symbol)
    return match.group("base") if match else None


def index(lines: Iterable[str], wanted: Collection[str] | None = None) -> dict[str, list[str]]:
    """Source name -> the code symbols that implement it, from kallsyms lines; only the
    names in wanted when given."""
    table: dict[str, list[str]] = {}
    for line in lines:
        fields = line.split(None, 3)
        if len(fields) < 3 or fields[1] not in _CODE_TYPES:
            continue
        base = base_name(fields[2])
        if base is not None and (wanted is None or base in wanted):
            symbols = table.setdefault(base, [])
            if fields[2] not in symbols:
                symbols.append(fields[2])
    return table


def choose(name: str, symbols: Iterable[str]) -> str | None:
    """The exact name if present, else the simplest clone (fewest suffixes, then sorted)."""
    found = set(symbols)
    if name in found:
        return name
    clones = sorted(s for s in found if base_name(s) == name)
    clones.sort(key=lambda s: s.count("."))
    return clones[0] if clones else None


def resolve_in(text: str, name: str) -> str | None:
    """Resolve ``name`` against kallsyms text (pure: for tests and other kernels' dumps)."""
    return choose(name, index(text.splitlines()).get(name, ()))


@functools.lru_cache(maxsize=2)
def _table(wanted: frozenset[str]) -> dict[str, list[str]]:
    """The running kernel's symbols of the wanted names, read once. kallsyms is ~10 MB:
    parsing it is not free, and an index of every symbol held ~30 MB of strings (attach's
    first start on a kernel went from 57 to 88 MB of RSS) for the few dozen asked for."""
    try:
        with KALLSYMS.open() as f:
            return index(f, wanted)
    except OSError:
        return {}


def resolve(name: str, among: frozenset[str] = frozenset()) -> str | None:
    """The symbol of the running kernel a kprobe on ``name`` should use, or None if absent.
    among: every name the caller will ask for, so that one read of kallsyms serves them all."""
    wanted = among if name in among else among | {name}
    return choose(name, _table(wanted).get(name, ()))
