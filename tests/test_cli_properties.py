"""Property: whatever arguments the command line is given, it never ends in a traceback,
and its exit status is 0, 1, 2 or 130; a refusal (2) is one line on stderr.

Argument lists are drawn from the real parser (every subcommand, every option, the
hook catalogue's names) with values mixing plausible ones, edges and junk. report,
compare, export and merge run to the end (they read and write files only, here in a
scratch folder); trace, attach and any other command run their checks only
(``cli.main(check_only=True)``): a valid combination would start real tracing, and
what those commands do once started is tested elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler import cli
from profiler.hooks import BY_NAME, KINDS
from profiler.transports import TRANSPORTS

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "traces" / "fixtures" / "udp-mtu9000-cpu0.json"
RUN_TO_THE_END = {"report", "compare", "export", "merge"}
STATUSES = {0, 1, 2, 130}

PARSER = cli.build_parser()
SUBCOMMANDS: dict[str, argparse.ArgumentParser] = next(
    a.choices for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
)

# Files of the scratch folder, and a few elsewhere that are only ever read.
POOL = [
    "run.json",
    "run2.json",
    "folder",
    "missing.json",
    "text.txt",
    "half.json",
    "fifo",
    "out.csv",
    "out.parquet",
    "out.hlog",
    "out.prom",
    "out.json",
    "out.xlsx",
    "folder/sub.json",
    "missing/x.json",
    "/dev/null",
    "/proc/self/ns/net",
    "/proc/self/ns/mnt",
    "/missing-dir/x.json",
]

# Text a command line can hold (no NUL, no lone surrogates) naming nothing outside
# the scratch folder (no absolute path, no ..): export and merge really write.
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    max_size=12,
).filter(lambda s: not s.startswith(("/", "~")) and ".." not in s)
numbers = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.sampled_from(["0", "1", "-1", "0.5", "nan", "inf", "-inf", "1e400", "0x10", "1_000", ""]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
lists = st.lists(
    st.sampled_from([*TRANSPORTS, *KINDS, *BY_NAME, "all", "bogus", ""]), max_size=4
).map(",".join)
specials = st.sampled_from(
    ["7000", "7000-7003", "9-2", "0", "10m", "5s", "1h", "0s", "127.0.0.1:0", "[::1]:0", ":0"]
)
values = st.one_of(numbers, lists, specials, st.sampled_from(POOL), text)


def options_of(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if a.option_strings and a.dest != "help"]


def positionals_of(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if not a.option_strings]


def arguments(draw: st.DrawFn, sub: argparse.ArgumentParser) -> list[str]:
    """Some of a parser's options, in any order (flags bare, others with a value), then
    its positionals (a nested command's: one of its commands, then its arguments)."""
    argv: list[str] = []
    options = options_of(sub)
    chosen = draw(st.permutations(options))[: draw(st.integers(0, 6))] if options else []
    for action in chosen:
        option = draw(st.sampled_from(action.option_strings))
        argv += [option] if action.nargs == 0 else [option, draw(values)]
    for action in positionals_of(sub):
        if isinstance(action, argparse._SubParsersAction):
            verb = draw(st.sampled_from(sorted(action.choices)))
            return [*argv, verb, *arguments(draw, action.choices[verb])]
        count = draw(st.integers(1, 3)) if action.nargs == "+" else 1
        argv += draw(st.lists(st.one_of(st.sampled_from(POOL), text), max_size=count))
    return argv


@st.composite
def argv_lists(draw: st.DrawFn) -> list[str]:
    """A command and its arguments; now and then an unknown command or option, or -h."""
    name = draw(st.sampled_from([*SUBCOMMANDS, "bogus"]))
    if name == "bogus":
        return [name, *draw(st.lists(values, max_size=3))]
    argv = [name, *arguments(draw, SUBCOMMANDS[name])]
    if draw(st.integers(0, 30)) == 0:
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["-h", "--nope", "--"])))
    return argv


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "run.json").write_bytes(RUN.read_bytes())
    (folder / "run2.json").write_bytes(RUN.read_bytes())
    (folder / "folder").mkdir()
    (folder / "text.txt").write_text("not a run\n")
    (folder / "half.json").write_text(json.dumps({"format": "stackprof-run", "version": 1}))
    os.mkfifo(folder / "fifo")
    return folder


@contextlib.contextmanager
def handlers_kept() -> Iterator[None]:
    """main() sets SIGTERM and SIGHUP handlers: the test process gets its own back."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def outcome(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of the command line given argv, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with handlers_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv, check_only=argv[0] not in RUN_TO_THE_END)
        except SystemExit as exc:  # argparse's -h prints the help and exits 0
            status = exc.code if isinstance(exc.code, int) else 2
    return status, err.getvalue()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(argv=argv_lists())
def test_no_input_ends_in_a_traceback(argv: list[str], scratch: Path) -> None:
    with contextlib.chdir(scratch):
        status, err = outcome(argv)
    assert status in STATUSES, (argv, status, err)
    if status == 2:
        assert err.count("\n") == 1 and err.startswith("stackprof: error:"), (argv, err)
    assert "Traceback" not in err, (argv, err)


def test_valid_arguments_pass_the_checks(scratch: Path) -> None:
    """The checks do not refuse what is right: a plain trace and attach, each command."""
    if os.geteuid() != 0:
        pytest.skip("trace and attach need root")
    cpu = str(min(os.sched_getaffinity(0)))
    for argv in (
        ["trace", "--duration", "1", "--server-cpu", cpu, "--client-cpu", cpu, "--out", "folder"],
        ["trace", "--transport", "udp,tcp", "--out", "new-folder", "--json", "cmp.json"],
        ["attach", "--ports", "7000-7003", "--pid", "1", "--netns", "/proc/self/ns/net"],
        ["attach", "--ports", "7000", "--duration", "0", "--save-every", "30s", "--out", "i"],
        ["report", "run.json"],
        ["compare", "run.json", "run2.json"],
        ["export", "run.json", "out.csv"],
        ["merge", "run.json", "run2.json", "-o", "merged.json"],
    ):
        with contextlib.chdir(scratch):
            status, err = outcome(argv)
        assert status == 0, (argv, err)
