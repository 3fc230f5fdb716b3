"""The options several commands take, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

As = Annotated[str, typer.Option("--as", help="Who acts, as ROLE:PARTY (e.g. client:acme).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Entity = Annotated[
    str, typer.Argument(help="contract, milestone, change_request, proposal or refund.")
]
Id = Annotated[int, typer.Argument(metavar="ID")]
