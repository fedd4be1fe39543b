"""Doctor's findings drawn: attach kinds, hook points, receive tracepoints and the self-test,
features, and the verdict."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from profiler.diagnosis import Diagnosis

PROOF_TEXT = {
    "attach": "loaded+attached",
    "socket": "attached to a throwaway socket",
    "tc": "attached to lo of a throwaway netns",
    "xdp": "attached to lo of a throwaway netns",
}
STATUS_STYLE = {"ok": "green", "missing": "red", "info": "yellow"}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def attach_table(diag: Diagnosis) -> Table:
    """Attach kinds, each proved by its probe program."""
    table = _table(f"attach kinds (proved with {diag.probe_object})", "kind", "works", "proof")
    for r in diag.attach:
        works = Text("yes", style="green") if r.works else Text(f"no: {r.error}", style="red")
        proof = PROOF_TEXT.get(r.proof, r.proof)
        table.add_row(r.kind, works, proof)
    return table


def hooks_table(diag: Diagnosis) -> Table:
    """Per hook point, the hook stackprof trace would use here."""
    table = _table("hook points (what stackprof trace would use)", "point", "hook", "refused")
    for h in diag.hooks:
        name = f"{h.name}*" if h.required else h.name
        hook = Text(h.hook or "none", style="" if h.hook else "red")
        resolved = [f"{t}->{s}" for t, s in h.symbols.items() if s and s != t]
        resolved += [f"{t}: not in kallsyms" for t, s in h.symbols.items() if s is None]
        if resolved:
            hook.append(f" ({', '.join(resolved)})", style="dim")
        table.add_row(name, hook, Text("\n".join(h.refused), style="dim"))
    return table


def _fired(diag: Diagnosis, mode: str, name: str) -> Text:
    test = next((t for t in diag.rx_selftest if t.mode == mode), None)
    if test is None or not test.ran:
        return Text("-", style="dim")
    if name not in test.fired:
        return Text("no event", style="dim")
    n = test.fired[name]
    return Text(f"yes ({n})", style="green") if n else Text("no", style="dim")


def receive_table(diag: Diagnosis) -> Table:
    """Per receive tracepoint: there or not, the attach kind that loads, fired per mode."""
    modes = [t.mode for t in diag.rx_selftest]
    table = _table(
        "receive tracepoints (exists, loads as, fired in the self-test)",
        "tracepoint",
        "point",
        "exists",
        "loads as",
        *(f"fired: {m}" for m in modes),
    )
    for h in diag.receive_hooks:
        exists = {True: Text("yes"), False: Text("no", style="red"), None: Text("?", "dim")}
        kind = Text(h.kind or "none", style="" if h.kind else "red")
        if h.refused:
            kind.append("\n" + "\n".join(h.refused), style="dim")
        cells = [_fired(diag, m, h.name) for m in modes]
        table.add_row(h.name, h.boundary, exists[h.exists], kind, *cells)
    return table


def selftest_lines(diag: Diagnosis) -> Text:
    """What each mode of the self-test sent and received, or why it did not run."""
    text = Text()
    for t in diag.rx_selftest:
        if t.skipped:
            line = f"self-test {t.mode}: skipped: {t.skipped}"
        else:
            line = (
                f"self-test {t.mode}: {t.datagrams} UDP datagrams of {t.payload} bytes "
                f"({t.fragments} packets each at MTU {t.mtu}) over veth between throwaway "
                f"namespaces, {t.received} received"
            )
            if t.error:
                line += f"; failed: {t.error}"
        text.append(line + "\n", style="red" if t.error else "dim")
    text.rstrip()
    return text


def checks_table(diag: Diagnosis) -> Table:
    """Features and settings, with one line on what to do about each missing one."""
    table = _table("features", "feature", "status", "detail / what to do")
    for c in diag.checks:
        cell = Text(c.detail)
        if c.fix:
            cell.append(f"\n-> {c.fix}", style="bold")
        table.add_row(c.name, Text(c.status, style=STATUS_STYLE[c.status]), cell)
    return table


def verdict(diag: Diagnosis) -> Text:
    unobserved = ", ".join(diag.unobserved) or "none"
    if diag.core_trace_ok:
        return Text(f"the core trace can run here; unobserved stages: {unobserved}", "green")
    return Text(
        f"the core trace cannot run: no working hook for {', '.join(diag.missing_required)}",
        "bold red",
    )


def render(diag: Diagnosis) -> RenderableType:
    header = Text(f"stackprof doctor: kernel {diag.kernel}", style="bold")
    note = Text("* required hook point", style="dim")
    parts: list[RenderableType] = [header, attach_table(diag), hooks_table(diag), note]
    if diag.receive_hooks:
        parts += [receive_table(diag), selftest_lines(diag)]
    parts.append(checks_table(diag))
    return Group(*parts, verdict(diag))
