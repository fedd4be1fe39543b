"""The C header shared with the BPF programs, read at import time.

Constants, enums and struct layouts are parsed from ``bpf/stackprof.h`` (found by
:mod:`profiler.resources`) so the Python side never restates a number the C side defines.
"""

from __future__ import annotations

import ast
import ctypes
import operator
import re
from typing import Any

from profiler import resources

HEADER = resources.shared_header()

_CTYPES = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _eval(expr: str, names: dict[str, int]) -> int:
    """Evaluate an integer expression of known names (array sizes)."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return int(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        raise ValueError(f"unsupported expression in header: {expr}")

    return walk(ast.parse(expr, mode="eval").body)


def parse_constants(text: str) -> dict[str, int]:
    """Every #define of an integer and every enum member, by name."""
    text = _strip_comments(text)
    names: dict[str, int] = {}
    for name, value in re.findall(r"^#define\s+(\w+)\s+(\d+)\s*$", text, flags=re.M):
        names[name] = int(value)
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        members = [m.strip() for m in body.split(",") if m.strip()]
        for index, member in enumerate(members):
            names[member] = index
    return names


def parse_enum(text: str, enum: str) -> list[str]:
    """Member names of one enum, in value order."""
    match = re.search(rf"enum\s+{enum}\s*\{{(.*?)\}}", _strip_comments(text), flags=re.S)
    if not match:
        raise KeyError(enum)
    return [m.strip() for m in match.group(1).split(",") if m.strip()]


def parse_struct(
    text: str,
    struct: str,
    names: dict[str, int],
    structs: dict[str, type[ctypes.Structure]] | None = None,
) -> type[ctypes.Structure]:
    """A ctypes.Structure with the same layout as a header struct; fields of
    struct types name earlier ones, given in structs."""
    match = re.search(rf"struct\s+{struct}\s*\{{(.*?)\}};", _strip_comments(text), flags=re.S)
    if not match:
        raise KeyError(struct)
    known = {**_CTYPES, **{f"struct {n}": t for n, t in (structs or {}).items()}}
    fields: list[tuple[str, type]] = []
    for line in match.group(1).split(";"):
        line = line.strip()
        if not line:
            continue
        decl = re.fullmatch(r"(__u8|__u16|__u32|__u64|struct\s+\w+)\s+(\w+)((?:\[[^\]]+\])*)", line)
        kind = re.sub(r"\s+", " ", decl.group(1)) if decl else ""
        if not decl or kind not in known:
            raise ValueError(f"unsupported field in struct {struct}: {line}")
        ctype: Any = known[kind]
        dims = [_eval(d, names) for d in re.findall(r"\[([^\]]+)\]", decl.group(3))]
        for dim in reversed(dims):
            ctype = ctype * dim
        fields.append((decl.group(2), ctype))
    return type(struct, (ctypes.Structure,), {"_fields_": fields})


_TEXT = HEADER.read_text()
CONST = parse_constants(_TEXT)
PATHS = [m.removeprefix("SP_PATH_").lower() for m in parse_enum(_TEXT, "sp_path")[:-1]]
STAGES = [m.removeprefix("SP_STAGE_").lower() for m in parse_enum(_TEXT, "sp_stage")[:-1]]
EXTRA_HISTS = [m.removeprefix("SP_HIST_").lower() for m in parse_enum(_TEXT, "sp_extra_hist")[:-1]]
PATH_COUNTERS = [
    m.removeprefix("SP_CNT_").lower() for m in parse_enum(_TEXT, "sp_path_counter")[:-1]
]
RING_KINDS = [m.removeprefix("SP_RING_").lower() for m in parse_enum(_TEXT, "sp_ring_kind")[:-1]]
MISSES = [m.removeprefix("SP_MISS_").lower() for m in parse_enum(_TEXT, "sp_miss")[:-1]]
DROP_CAUSES = [m.removeprefix("SP_DROP_").lower() for m in parse_enum(_TEXT, "sp_drop_cause")[:-1]]
Config = parse_struct(_TEXT, "sp_config", CONST)
Stats = parse_struct(_TEXT, "sp_stats", CONST)
FlightKey = parse_struct(_TEXT, "sp_flight_key", CONST)
Flight = parse_struct(_TEXT, "sp_flight", CONST)
FlightSlot = parse_struct(
    _TEXT, "sp_flight_slot", CONST, {"sp_flight_key": FlightKey, "sp_flight": Flight}
)


def hist_index(path: str, name: str) -> int:
    """Row of a histogram in Stats.hist, as the BPF side computes it."""
    per_path = len(STAGES) + len(EXTRA_HISTS)
    column = STAGES.index(name) if name in STAGES else len(STAGES) + EXTRA_HISTS.index(name)
    return PATHS.index(path) * per_path + column
