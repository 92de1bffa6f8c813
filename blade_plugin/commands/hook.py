"""`blade-bpo hook`: the `.pth` that makes plain `llamafactory-cli` see blade-plugin."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import click

from ..lf.hook import PTH_LINE, PTH_NAME


def _pth_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


@click.group()
def hook() -> None:
    """Inspect or (re)install the LLaMA-Factory hook (`pip install .` and `-e .` install it already)."""


@hook.command()
def status() -> None:
    """Say whether the hook is installed and whether LLaMA-Factory sees our templates."""
    import subprocess
    import sys

    pth = _pth_path()
    click.echo(f".pth file: {pth} ({'present' if pth.is_file() else 'MISSING: run blade-bpo hook install'})")
    probe = ("import llamafactory.data.template as t, llamafactory.data.parser as p; "
             "print(all(n in t.TEMPLATES for n in ('blade_chatml','blade_qwen')), "
             "getattr(p.get_dataset_list, '_blade_patched', False))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    click.echo(f"templates registered, datasets patched (fresh interpreter): {out.stdout.strip() or out.stderr.strip()[-300:]}")


@hook.command()
def install() -> None:
    """Write the .pth into this environment's site-packages (for installs made without hatchling)."""
    pth = _pth_path()
    pth.write_text(PTH_LINE, encoding="utf-8")
    click.echo(f"installed {pth}")


@hook.command()
def uninstall() -> None:
    """Remove the .pth (or set BLADE_PLUGIN_DISABLE_HOOK=1 to switch it off for one process)."""
    pth = _pth_path()
    if pth.exists():
        pth.unlink()
        click.echo(f"removed {pth}")
    else:
        click.echo(f"not installed: {pth}")
