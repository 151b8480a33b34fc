"""`codeprm demo` (and `make demo`): the main job, run end to end on this machine.

Today: the whole stack comes up, every service answers its health, readiness and metrics
endpoints, and everything shuts down cleanly.
"""

from __future__ import annotations

import httpx
from rich.console import Console
from rich.table import Table

from codeprm.stack import LocalStack, StackConfig, StackError


def run_demo(config: StackConfig, console: Console) -> int:
    try:
        with console.status("starting the local stack..."):
            stack = LocalStack(config, say=console.print).__enter__()
    except StackError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    try:
        table = Table(title="codeprm demo: service checks")
        for column in ("service", "url", "/healthz", "/readyz", "/metrics"):
            table.add_column(column)
        failures = 0
        with httpx.Client(timeout=10) as client:
            for service in stack.services:
                if service.url is None:
                    table.add_row(service.name, "(queue worker)", "-", "job answered", "-")
                    continue
                codes = [
                    client.get(f"{service.url}{path}").status_code
                    for path in ("/healthz", "/readyz", "/metrics")
                ]
                failures += sum(code != 200 for code in codes)
                table.add_row(service.name, service.url, *(str(c) for c in codes))
        console.print(table)
    finally:
        stack.stop()
    console.print(
        "[green]demo passed[/green]: stack came up, answered and stopped cleanly"
        if failures == 0
        else f"[red]demo failed: {failures} checks did not answer 200"
    )
    return 0 if failures == 0 else 1
