"""A small typed ctypes layer over the system libbpf (libbpf.so.1): the one binding.

Only what stackprof needs: open an object, set its rodata, choose which
programs load, load, attach, read maps and the mmapped globals, close; and for
doctor's proofs, a program's fd, an XDP link and a TC ingress attachment.
Links live as long as the process holds them: nothing is pinned, so a process
that dies leaves no BPF state behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading
from pathlib import Path

_lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc = ctypes.CDLL(None)
_libc.vasprintf.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_void_p]
_libc.free.argtypes = [ctypes.c_void_p]


def _sig(name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_P = ctypes.c_void_p
_sig("bpf_object__open_file", _P, ctypes.c_char_p, _P)
_sig("bpf_object__load", ctypes.c_int, _P)
_sig("bpf_object__close", None, _P)
_sig("bpf_object__find_map_by_name", _P, _P, ctypes.c_char_p)
_sig("bpf_object__find_program_by_name", _P, _P, ctypes.c_char_p)
_sig("bpf_object__next_program", _P, _P, _P)
_sig("bpf_program__name", ctypes.c_char_p, _P)
_sig("bpf_program__section_name", ctypes.c_char_p, _P)
_sig("bpf_program__set_autoload", ctypes.c_int, _P, ctypes.c_bool)
_sig("bpf_program__fd", ctypes.c_int, _P)
_sig("bpf_program__attach", _P, _P)
_sig("bpf_program__attach_kprobe", _P, _P, ctypes.c_bool, ctypes.c_char_p)
_sig("bpf_link__destroy", ctypes.c_int, _P)
_sig("bpf_map__fd", ctypes.c_int, _P)
_sig("bpf_map__initial_value", _P, _P, ctypes.POINTER(ctypes.c_size_t))
_sig("bpf_map__set_initial_value", ctypes.c_int, _P, _P, ctypes.c_size_t)
_sig("bpf_map__value_size", ctypes.c_uint32, _P)
_sig("bpf_map__max_entries", ctypes.c_uint32, _P)
_sig("bpf_obj_get_info_by_fd", ctypes.c_int, ctypes.c_int, _P, ctypes.POINTER(ctypes.c_uint32))
_sig("libbpf_get_error", ctypes.c_long, _P)
_sig("libbpf_set_print", _P, _PRINT_FN)
_sig("libbpf_num_possible_cpus", ctypes.c_int)
_sig("bpf_prog_get_fd_by_id", ctypes.c_int, ctypes.c_uint32)
_sig("bpf_link_create", ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, _P)
_sig("bpf_enable_stats", ctypes.c_int, ctypes.c_int)

BPF_XDP = 37  # enum bpf_attach_type
BPF_TC_INGRESS = 1  # enum bpf_tc_attach_point


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


_sig("bpf_tc_hook_create", ctypes.c_int, ctypes.POINTER(TcHook))
_sig("bpf_tc_attach", ctypes.c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))


class BPFError(OSError):
    """A libbpf call failed; ``log`` holds libbpf's own messages (verifier log)."""

    def __init__(self, err: int, message: str, log: str = "") -> None:
        super().__init__(err, message)
        self.log = log

    def log_tail(self, lines: int = 12) -> str:
        """The end of the log, where the verifier says why it refused."""
        return "\n".join(self.log.splitlines()[-lines:])


class _Log:
    """Collects libbpf's messages (verifier logs among them) per thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.callback = _PRINT_FN(self._print)
        _lib.libbpf_set_print(self.callback)

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        # vasprintf sizes the buffer: a fixed 1 MiB one per message (thousands per
        # load) cost seconds of memset, minutes under emulation.
        text = ctypes.c_void_p()
        if _libc.vasprintf(ctypes.byref(text), fmt, args) < 0 or not text.value:
            return 0
        try:
            self.lines().append(ctypes.string_at(text.value).decode(errors="replace").rstrip())
        finally:
            _libc.free(text)
        return 0

    def lines(self) -> list[str]:
        if not hasattr(self._local, "lines"):
            self._local.lines = []
        lines: list[str] = self._local.lines
        return lines

    def take(self) -> str:
        text = "\n".join(line for line in self.lines() if line)
        self.lines().clear()
        return text


_log = _Log()


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr or _lib.libbpf_get_error(ptr):
        err = -_lib.libbpf_get_error(ptr) if ptr else ctypes.get_errno()
        raise BPFError(
            err or errno.EINVAL, f"{what}: {os.strerror(err or errno.EINVAL)}", _log.take()
        )
    return ptr


class ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info, up to recursion_misses (uapi, stable)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
    ]


def _prog_info(fd: int, what: str) -> ProgInfo:
    info = ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if fd < 0 or _lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)):
        raise BPFError(ctypes.get_errno(), f"info of {what}")
    return info


def prog_info_by_id(prog_id: int) -> ProgInfo:
    """Any loaded program's info, another process's too (the overhead benchmark's counts)."""
    fd = _checked(_lib.bpf_prog_get_fd_by_id(prog_id), f"program {prog_id}")
    try:
        return _prog_info(fd, f"program {prog_id}")
    finally:
        os.close(fd)


def enable_stats() -> int:
    """An fd keeping every program's run time and count on until closed (BPF_ENABLE_STATS):
    unlike kernel.bpf_stats_enabled, a process that dies leaves nothing on."""
    return _checked(_lib.bpf_enable_stats(0), "enable BPF stats")  # BPF_STATS_RUN_TIME


class Program:
    """One program of an object: its name, section, autoload switch and stats."""

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @property
    def name(self) -> str:
        return (_lib.bpf_program__name(self._ptr) or b"").decode()

    @property
    def section(self) -> str:
        return (_lib.bpf_program__section_name(self._ptr) or b"").decode()

    def set_autoload(self, on: bool) -> None:
        _lib.bpf_program__set_autoload(self._ptr, on)

    def attach(self) -> Link:
        """Attach by section name (libbpf picks the attach type from SEC())."""
        return Link(_check_ptr(_lib.bpf_program__attach(self._ptr), f"attach {self.section}"))

    def attach_kprobe(self, function: str) -> Link:
        """Attach a kprobe or kretprobe program to function, a name as kallsyms has it
        (which may carry a compiler suffix its SEC() cannot know)."""
        retprobe = self.section.startswith("kretprobe")
        ptr = _lib.bpf_program__attach_kprobe(self._ptr, retprobe, function.encode())
        return Link(_check_ptr(ptr, f"attach {self.section} to {function}"))

    def info(self) -> ProgInfo:
        """Run count, run time (when kernel.bpf_stats_enabled) and recursion misses."""
        return _prog_info(_lib.bpf_program__fd(self._ptr), self.name)

    def new_fd(self) -> int:
        """A new fd of the loaded program, found by id; the caller closes it."""
        return _checked(_lib.bpf_prog_get_fd_by_id(self.info().id), f"fd of {self.name}")


class Link:
    """An attachment; destroying it detaches the program."""

    def __init__(self, ptr: int) -> None:
        self._ptr: int | None = ptr

    def destroy(self) -> None:
        if self._ptr:
            _lib.bpf_link__destroy(self._ptr)
            self._ptr = None


class Map:
    """A map of a loaded object: element access by ctypes key and value."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return int(_lib.bpf_map__fd(self._ptr))

    def set_initial_value(self, value: ctypes.Structure) -> None:
        """Write a global section (e.g. .rodata) before load."""
        size = _lib.bpf_map__value_size(self._ptr)
        if ctypes.sizeof(value) > size:
            raise BPFError(errno.EINVAL, f"{self.name}: {ctypes.sizeof(value)} > {size} bytes")
        buf = ctypes.create_string_buffer(size)
        ctypes.memmove(buf, ctypes.byref(value), ctypes.sizeof(value))
        if _lib.bpf_map__set_initial_value(self._ptr, buf, size):
            raise BPFError(errno.EINVAL, f"set initial value of {self.name}")

    def _map_memory(self, size: int) -> mmap.mmap:
        """The map's memory, size bytes rounded up to pages, shared with the kernel."""
        length = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._mmap = mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return self._mmap

    def mmapped(self, ctype: type[ctypes.Structure]) -> ctypes.Structure:
        """The live memory of an mmapable array map (a global section) after load."""
        size = _lib.bpf_map__value_size(self._ptr)
        if size < ctypes.sizeof(ctype):
            raise BPFError(errno.EINVAL, f"{self.name} is smaller than {ctype.__name__}")
        return ctype.from_buffer(self._map_memory(size))

    def mmapped_array(self, ctype: type[ctypes.Structure]) -> ctypes.Array[ctypes.Structure]:
        """The live elements of an mmapable array map whose values are ctype."""
        size = _lib.bpf_map__value_size(self._ptr)
        if size != ctypes.sizeof(ctype):
            wrong = f"{self.name} has {size}-byte values, not {ctype.__name__}"
            raise BPFError(errno.EINVAL, wrong)
        count = _lib.bpf_map__max_entries(self._ptr)
        return (ctype * count).from_buffer(self._map_memory(size * count))


class BPFObject:
    """An opened object file; load() it after choosing programs and rodata."""

    def __init__(self, path: Path) -> None:
        if not Path(path).exists():
            raise BPFError(errno.ENOENT, f"{path} not found (run setup.sh to build bpf/)")
        _log.take()
        self._ptr: int | None = _check_ptr(
            _lib.bpf_object__open_file(str(path).encode(), None), f"open {path}"
        )
        self.links: list[Link] = []

    def programs(self) -> list[Program]:
        progs, prev = [], None
        while ptr := _lib.bpf_object__next_program(self._ptr, prev):
            progs.append(Program(ptr))
            prev = ptr
        return progs

    def program(self, name: str) -> Program:
        return Program(
            _check_ptr(
                _lib.bpf_object__find_program_by_name(self._ptr, name.encode()), f"program {name}"
            )
        )

    def map(self, name: str) -> Map:
        ptr = _lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        return Map(_check_ptr(ptr, f"map {name}"), name)

    def global_map(self, section: str) -> Map:
        """The map behind a global section (.rodata, .bss): libbpf finds it by the
        section's name (the kernel's name for it, prefixed by the object's, is not asked)."""
        ptr = _lib.bpf_object__find_map_by_name(self._ptr, section.encode())
        if not ptr:
            raise BPFError(errno.ENOENT, f"no {section} map in object")
        return Map(ptr, section)

    def autoload_only(self, names: set[str]) -> None:
        for prog in self.programs():
            prog.set_autoload(prog.name in names)

    def load(self) -> None:
        _log.take()
        err = _lib.bpf_object__load(self._ptr)
        if err:
            raise BPFError(-err, f"load: {os.strerror(-err)}", _log.take())

    def attach(self, name: str, function: str | None = None) -> Link:
        """Attach by SEC(); a kprobe program to function when given."""
        program = self.program(name)
        link = program.attach_kprobe(function) if function else program.attach()
        self.links.append(link)
        return link

    def detach(self) -> None:
        """Detach every program; the maps stay readable until close."""
        for link in self.links:
            link.destroy()
        self.links.clear()

    def close(self) -> None:
        """Detach everything and free the object."""
        self.detach()
        if self._ptr:
            _lib.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked(ret: int, what: str) -> int:
    """libbpf's low-level calls return -errno on failure."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def xdp_link(prog_fd: int, ifindex: int) -> int:
    """Attach an XDP program to an interface by a link; its fd (closing it detaches)."""
    return _checked(_lib.bpf_link_create(prog_fd, ifindex, BPF_XDP, None), "xdp")


def tc_attach_ingress(prog_fd: int, ifindex: int) -> None:
    """Attach a TC program to an interface's ingress (creating its clsact qdisc)."""
    hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, handle=1, priority=1)
    _checked(_lib.bpf_tc_hook_create(ctypes.byref(hook)), "tc clsact")
    _checked(_lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), "tc attach")
