"""Writing lifecycle diagrams: Mermaid and DOT text, and SVG through Graphviz's `dot`.

The generated files in `diagrams/` are committed; tests/unit/test_diagrams.py regenerates
them and fails if one is stale. An SVG carries the SHA-256 of the DOT it was drawn from,
so staleness does not depend on the Graphviz version that drew it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from sqlalchemy.engine import Engine as DBEngine
from statemachine.contrib.diagram.graphviz import (
    GraphvizError,
    GraphvizNotFoundError,
    run_graphviz,
)

from storage.errors import ToolMissing, ValidationError
from workflows import views
from workflows.diagrams import lifecycle, to_dot, to_mermaid
from workflows.machines import MACHINES
from workflows.policy import Policy
from workflows.terms import TermsBook

FORMATS = {"mermaid": ".mmd", "dot": ".dot", "svg": ".svg"}
_SOURCE_MARK = "<!-- escrowflow: drawn from DOT sha256 "


def check_formats(formats: Iterable[str]) -> list[str]:
    chosen = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValidationError(
            f"unknown diagram format {', '.join(unknown) or '(none)'}: use svg, mermaid or dot",
            code="unknown_format",
        )
    # Text first: without Graphviz, Mermaid and DOT are still written before SVG fails.
    return [f for f in FORMATS if f in chosen]


def svg(dot_source: str) -> str:
    try:
        drawn = run_graphviz(dot_source, "svg").decode()
    except GraphvizNotFoundError:
        raise ToolMissing(
            "Graphviz's `dot` is not installed: install the Debian package graphviz "
            "(apt-get install graphviz), or use --format mermaid,dot",
            code="graphviz_missing",
        ) from None
    except GraphvizError as exc:
        raise ToolMissing(f"Graphviz failed: {exc}", code="graphviz_failed") from exc
    digest = hashlib.sha256(dot_source.encode()).hexdigest()
    head, sep, rest = drawn.partition("?>")
    mark = f"{_SOURCE_MARK}{digest} -->"
    return f"{head}{sep}\n{mark}{rest}" if sep else f"{mark}\n{drawn}"


def drawn_from(svg_text: str) -> str | None:
    """The SHA-256 of the DOT an SVG of ours was drawn from."""
    start = svg_text.find(_SOURCE_MARK)
    if start < 0:
        return None
    return svg_text[start + len(_SOURCE_MARK) :].split(" ", 1)[0]


def render(
    entity: str,
    fmt: str,
    policy: Policy,
    current: str | None = None,
    due: Mapping[str, str] = {},
    terms: str | None = None,
) -> str:
    lc = lifecycle(entity, policy, terms)
    if fmt == "mermaid":
        return to_mermaid(lc, current=current, due=due)
    dot_source = to_dot(lc, current=current, due=due)
    return dot_source if fmt == "dot" else svg(dot_source)


def write_all(
    out: Path, formats: Iterable[str], policy: Policy, terms: str | None = None
) -> list[Path]:
    """Every lifecycle in every format (timers from `policy`, the terms named `terms`);
    the files written."""
    chosen = check_formats(formats)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in chosen:
        for entity in MACHINES:
            path = out / f"{entity}{FORMATS[fmt]}"
            path.write_text(render(entity, fmt, policy, terms=terms))
            written.append(path)
    return written


def instance(db: DBEngine, book: TermsBook, entity: str, entity_id: int, fmt: str) -> str:
    """An entity's lifecycle with its current state highlighted, the date its pending
    deadline falls due on the timer it would fire, and its timers timed by its
    contract's terms, named on each timer edge (TM1)."""
    (fmt,) = check_formats([fmt])
    view = views.show(db, entity, entity_id)
    contract_id = entity_id if entity == "contract" else view["contract_id"]
    terms = book.of_contract_id(contract_id)
    due = {
        d["event"]: d["due_at"][:16].replace("T", " ") + " UTC" for d in view["pending_deadlines"]
    }
    return render(entity, fmt, terms.policy, current=view["state"], due=due, terms=terms.name)


def format_of(path: Path) -> str:
    for fmt, suffix in FORMATS.items():
        if path.suffix == suffix:
            return fmt
    raise ValidationError(
        f"--diagram {path}: name a .svg, .mmd (Mermaid) or .dot file", code="unknown_format"
    )
