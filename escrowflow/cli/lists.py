"""List commands (contracts, a contract's milestones, refunds) and the forecast. The
CLI reads the database directly, so it sees every row, as a `read` token does."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from escrowflow.cli.common import app, emit, group, run
from escrowflow.cli.options import AsJson
from workflows import forecast, lists
from workflows.policy import format_money

Limit = Annotated[int, typer.Option(help=f"Rows per page, 1 to {lists.MAX_LIMIT}.")]
Cursor = Annotated[str | None, typer.Option(help="The next page's cursor, as last printed.")]
State = Annotated[str | None, typer.Option(help="Only rows in this state.")]

contracts_app = group("contracts", "Contracts: list them.")
milestones_app = group("milestones", "Milestones: list a contract's.")
refunds_app = group("refunds", "Refunds: list them (--state disputed: the dispute queue).")


@contracts_app.command("list")
def contracts_list(
    client: Annotated[str | None, typer.Option(help="Only this client's.")] = None,
    freelancer: Annotated[str | None, typer.Option(help="Only this freelancer's.")] = None,
    state: State = None,
    limit: Limit = lists.DEFAULT_LIMIT,
    cursor: Cursor = None,
    as_json: AsJson = False,
) -> None:
    """Contracts by id, filtered by client, freelancer and state."""
    filters = {"client_id": client, "freelancer_id": freelancer, "state": state}
    _emit_page(
        "contract",
        filters,
        (limit, cursor, as_json),
        lambda c: (
            f"{c['id']:>6}  {c['state']:<10} {c['client_id']} -> {c['freelancer_id']}  "
            f"{c['title']}  held {format_money(c['held'], c['currency'])}"
        ),
    )


@milestones_app.command("list")
def milestones_list(
    contract: Annotated[int, typer.Argument(metavar="CONTRACT")],
    as_json: AsJson = False,
    limit: Limit = lists.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> None:
    """A contract's milestones, in contract order."""
    _emit_page(
        "milestone",
        {"contract_id": contract},
        (limit, cursor, as_json),
        lambda m, currency: (
            f"milestone {m['id']:>6}  #{m['position']:<3} {m['state']:<16} "
            f"{format_money(m['amount'], currency):>18}  {m['title']}"
            + (f"  due {m['due_date']}" if m["due_date"] else "")
        ),
    )


@refunds_app.command("list")
def refunds_list(
    state: State = None,
    contract: Annotated[int | None, typer.Option(help="Only this contract's.")] = None,
    limit: Limit = lists.DEFAULT_LIMIT,
    cursor: Cursor = None,
    as_json: AsJson = False,
) -> None:
    """Refunds by id, oldest first; --state disputed is the dispute team's queue."""
    _emit_page(
        "refund",
        {"state": state, "contract_id": contract},
        (limit, cursor, as_json),
        lambda r, currency: (
            f"refund {r['id']:>6}  {r['state']:<10} contract {r['contract_id']}  "
            f"{format_money(r['amount'], currency):>18}  {r['reason']}"
        ),
    )


def _emit_page(
    entity: str, filters: dict[str, Any], paging: tuple[int, str | None, bool], line: Any
) -> None:
    limit, cursor, as_json = paging
    chosen = {k: v for k, v in filters.items() if v is not None}
    found = run(lambda e: lists.entity_page(e.db, entity, chosen, None, limit, cursor))
    money_in = (
        run(lambda e: lists.currencies_of(e.db, {i["contract_id"] for i in found["items"]}))
        if entity in ("milestone", "refund")
        else {}
    )

    def text(page: dict[str, Any]) -> str:
        lines = [
            line(item, money_in[item["contract_id"]]) if money_in else line(item)
            for item in page["items"]
        ] or [f"no {entity}s match"]
        if page["next_cursor"]:
            lines.append(f"more: --cursor {page['next_cursor']}")
        return "\n".join(lines)

    emit(found, as_json, text)


@app.command("forecast")
def forecast_command(
    days: Annotated[int, typer.Option(help="How many days ahead, 1 to 366.")] = (
        forecast.DEFAULT_DAYS
    ),
    as_json: AsJson = False,
) -> None:
    """Money that moves by itself if nobody acts: per day and currency, what auto-approvals
    release to freelancers and default refunds return to clients; paused ones apart."""
    found = run(lambda e: forecast.forecast(e.db, e.clock.now(), days))

    def text(f: dict[str, Any]) -> str:
        def money(row: dict[str, Any]) -> str:
            c = row["currency"]
            return (
                f"{format_money(row['to_freelancers'], c)} to freelancers "
                f"({row['releases']} releases), {format_money(row['to_clients'], c)} to "
                f"clients ({row['refunds']} refunds)"
            )

        lines = [f"until {f['until']}, if nobody acts:"]
        lines += [f"  {d['date']}  {money(d)}" for d in f["by_day"]] or ["  nothing moves"]
        lines += [f"  total  {money(t)}" for t in f["totals"]]
        lines += [f"  paused {money(p)}" for p in f["paused"]]
        return "\n".join(lines)

    emit(found, as_json, text)
