"""Lifecycle diagrams drawn from the machine classes themselves (DOT and Mermaid text).

States (initial and final) come from python-statemachine's diagram extraction; the
edges are read from the classes too, with what generic diagrams leave out: the roles
that may fire each event, the named guards (validators) that can refuse it, and the
timers, drawn distinctly and labelled with their duration under the current policy.
Moves the engine makes as a consequence of another entity's event are drawn dotted.

Pure text, no I/O: rendering DOT to SVG is the shell's job (escrowflow.diagrams).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from statemachine.contrib.diagram.extract import extract
from statemachine.contrib.diagram.model import StateType

from workflows.actors import Role
from workflows.machines import MACHINES, EscrowMachine, timer_of
from workflows.policy import Policy

TIMER_COLOUR = "#c2410c"
ENGINE_COLOUR = "#6b7280"
CURRENT_FILL = "#5eead4"
TITLES = {
    "contract": "Contract",
    "milestone": "Milestone",
    "change_request": "Change request",
    "proposal": "Proposal",
    "refund": "Refund",
}


@dataclass(frozen=True)
class Node:
    id: str
    initial: bool
    final: bool


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    event: str
    roles: tuple[str, ...]
    guards: tuple[str, ...]
    kind: str  # "party", "timer" or "engine"
    after: timedelta | None = None
    restarts_timer: bool = False  # e.g. an edited change request: a fresh 7 days
    rules: tuple[str, ...] = ()  # the rule IDs the event enforces (docs/rules.md)
    # NT2: a timer's reminders, how long before it, and the party they go to.
    reminders: tuple[timedelta, ...] = ()
    reminds: str | None = None
    terms: str | None = None  # TM1: the name of the terms the timer's length is from


@dataclass(frozen=True)
class Lifecycle:
    entity: str
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def lifecycle(entity: str, policy: Policy, terms: str | None = None) -> Lifecycle:
    """The machine as nodes and edges; timers timed by `policy`, the policy of the terms
    named `terms` (TM1: drawn on each timer edge)."""
    machine = MACHINES[entity]
    graph = extract(machine)
    nodes = tuple(Node(s.id, s.is_initial, s.type is StateType.FINAL) for s in graph.states)
    edges: list[Edge] = []
    for state in machine.states:
        timer = timer_of(machine, state.id)
        for transition in state.transitions:
            for event in transition.events:
                edge = _edge(machine, state.id, transition, str(event), timer, policy)
                edges.append(replace(edge, terms=terms) if edge.kind == "timer" else edge)
    return Lifecycle(entity, f"{TITLES[entity]} lifecycle", nodes, tuple(edges))


def _edge(
    machine: type[EscrowMachine],
    source: str,
    transition: Any,
    event: str,
    timer: Any,
    policy: Policy,
) -> Edge:
    roles = machine.permissions[event]
    guards = tuple(
        str(spec.func)
        for name in ("validators", "cond")
        for spec in getattr(transition, name)
        if not spec.is_convention
    )
    kind, after, reminds = "party", None, None
    reminders: tuple[timedelta, ...] = ()
    if roles == frozenset({Role.SYSTEM}):
        if timer is not None and timer.event == event:
            kind, after = "timer", policy.duration(timer.policy)
            reminders = tuple(policy.reminders.get(timer.policy, ()))
            reminds = timer.reminds.value if timer.reminds else None
        else:
            kind = "engine"
    return Edge(
        source=source,
        target=transition.target.id,
        event=event,
        roles=tuple(sorted(r.value for r in roles)),
        guards=guards,
        kind=kind,
        after=after,
        restarts_timer=timer is not None and event in timer.restart_on,
        rules=tuple(machine.rules[event]),
        reminders=reminders,
        reminds=reminds,
    )


def duration_text(delta: timedelta) -> str:
    """14 days, 36 hours, 90 minutes, 45 seconds: the largest whole unit."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _lines(edge: Edge, due: Mapping[str, str]) -> list[str]:
    """An edge's label, line by line; the last line names the rules it enforces."""
    return [*_event_lines(edge, due), " ".join(edge.rules)]


def _event_lines(edge: Edge, due: Mapping[str, str]) -> list[str]:
    if edge.kind == "timer":
        assert edge.after is not None
        after = f"after {duration_text(edge.after)}"
        if edge.terms:
            after += f" (terms {edge.terms})"
        lines = [after, f"{edge.event} (timer)"]
        if edge.reminders:
            before = ", ".join(duration_text(r) for r in edge.reminders)
            lines.append(f"reminds {edge.reminds} {before} before")
        if edge.event in due:
            lines.append(f"due {due[edge.event]}")
        return lines
    if edge.kind == "engine":
        return [f"{edge.event} (engine)"]
    lines = [f"{edge.event} ({', '.join(edge.roles)})"]
    if edge.restarts_timer:
        lines[0] += ", restarts the timer"
    guards = [g.removeprefix("is_").replace("_", " ") for g in edge.guards]
    # Two guards to a line: long labels make a layout unreadable.
    for start in range(0, len(guards), 2):
        pair = ", ".join(guards[start : start + 2])
        lines.append(("if " if start == 0 else "and ") + pair)
    return lines


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _node_label(node: Node, loops: list[tuple[str, list[str]]]) -> str:
    """The state's name, and below it the events that leave it where it is (drawn as
    internal transitions: loops around a box overlap their neighbours' labels)."""
    rows = [f'<TR><TD><FONT POINT-SIZE="14"><B>{_html(node.id)}</B></FONT></TD></TR>']
    for kind, lines in loops:
        colour = ENGINE_COLOUR if kind == "engine" else "#1f2937"
        text = '<BR ALIGN="LEFT"/>'.join(_html(line) for line in lines)
        rows.append(
            f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10" COLOR="{colour}">↻ {text}'
            '<BR ALIGN="LEFT"/></FONT></TD></TR>'
        )
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1">{"".join(rows)}</TABLE>>'


def to_dot(lc: Lifecycle, *, current: str | None = None, due: Mapping[str, str] = {}) -> str:
    """Graphviz DOT. With `current`, that state is highlighted; `due` adds the date a
    pending timer falls due ({event: text})."""
    out = [
        f"digraph {lc.entity} {{",
        f'  graph [rankdir=TB, fontname="Helvetica", fontsize=16, label="{lc.title}", '
        "labelloc=t, nodesep=0.6, ranksep=1.0, pad=0.3];",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", '
        'fontname="Helvetica", fontsize=12, margin="0.15,0.08"];',
        '  edge [fontname="Helvetica", fontsize=11];',
        '  __start [shape=circle, style=filled, fillcolor="#111111", label="", width=0.18];',
    ]
    loops: dict[str, list[tuple[str, list[str]]]] = {}
    for edge in lc.edges:
        if edge.source == edge.target:
            loops.setdefault(edge.source, []).append((edge.kind, _lines(edge, due)))
    for node in lc.nodes:
        attrs = [f"label={_node_label(node, loops.get(node.id, []))}"]
        if node.final:
            attrs.append('peripheries=2, fillcolor="#f3f4f6"')
        if node.id == current:
            attrs.append(f'fillcolor="{CURRENT_FILL}", penwidth=3')
        out.append(f"  {node.id} [{', '.join(attrs)}];")
        if node.initial:
            out.append(f"  __start -> {node.id};")
    for edge in lc.edges:
        if edge.source != edge.target:
            out.append(_dot_edge(edge, _lines(edge, due)))
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_edge(edge: Edge, lines: list[str]) -> str:
    label = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    style = {
        "party": "",
        "timer": f', style=dashed, penwidth=2, color="{TIMER_COLOUR}", fontcolor="{TIMER_COLOUR}"',
        "engine": f', style=dotted, color="{ENGINE_COLOUR}", fontcolor="{ENGINE_COLOUR}"',
    }[edge.kind]
    return f'  {edge.source} -> {edge.target} [label="{label}"{style}];'


def to_mermaid(lc: Lifecycle, *, current: str | None = None, due: Mapping[str, str] = {}) -> str:
    """Mermaid `stateDiagram-v2`. Timers read "⏱ after 14 days"; engine moves "(engine)"."""
    out = ["---", f"title: {lc.title}", "---", "stateDiagram-v2", "    direction LR"]
    for node in lc.nodes:
        if node.initial:
            out.append(f"    [*] --> {node.id}")
    for edge in lc.edges:
        lines = _lines(edge, due)
        if edge.kind == "timer":
            lines[0] = f"⏱ {lines[0]}"
        label = " · ".join(line.replace(":", " ") for line in lines)
        out.append(f"    {edge.source} --> {edge.target} : {label}")
    for node in lc.nodes:
        if node.final:
            out.append(f"    {node.id} --> [*]")
    if current is not None:
        out.append(f"    classDef current fill:{CURRENT_FILL},stroke:#111,stroke-width:3px")
        out.append(f"    class {current} current")
    return "\n".join(out) + "\n"
