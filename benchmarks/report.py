"""The header every committed results table carries: title, exact command, machine, date."""

from __future__ import annotations

import os
import platform
import sys
import time


def machine(threads: str | None = None, accelerator: str | None = None) -> str:
    if accelerator:  # a device run: the accelerator did the work, the host only drove it
        return f"{platform.machine()} host, {accelerator}"
    cores = threads or f"{os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {cores}, CPU only"


def write_report(path: str, title: str, setup: str, body: list[str],
                 threads: str | None = None, accelerator: str | None = None) -> str:
    """Write the markdown report (and print it); returns its text. `accelerator` names the
    GPU of a device run (then the machine line says so instead of "CPU only")."""
    text = "\n".join([
        f"# {title}", "", f"Command: `python {' '.join(sys.argv)}`", "",
        f"Machine: {machine(threads, accelerator)}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        f" {setup}", "", *body, ""])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    return text
