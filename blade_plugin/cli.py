"""`blade-bpo`: the click group. Sub-commands live in `blade_plugin/commands/` and load lazily, so
`blade-bpo --help` and light commands never pay for importing torch or llamafactory."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from . import __version__
from .extras.errors import BladeError

# name -> "module:attribute" under blade_plugin.commands
COMMANDS: dict[str, str] = {
    "model": "model:model",
    "init": "init:init_workspace",
    "hook": "hook:hook",
    "knowledge": "knowledge:knowledge",
    "optimize": "optimize:optimize",
    "evaluate": "evaluate:evaluate",
    "answer": "answer:answer",
    "demo": "demo:demo",
    "run": "run:run",
    "merge": "merge:merge",
    "serve": "serve:serve",
    "ablate": "ablate:ablate",
    "probe": "probe:probe",
    "split": "split:split",
}


# Environment variables every command may read that no option of its names (each option shows its own).
ENVIRONMENT = {
    "OPENAI_API_KEY": "the LLM endpoint's API key (another variable's name: --llm-api-key-env); never stored",
    "BLADE_HOME": "per-user state: the materialised embedded model and the LLM cache "
                  "(default: $XDG_CACHE_HOME/blade-plugin, else ~/.cache/blade-plugin)",
    "BLADE_DEFAULT_MODEL_DIR": "where the embedded SmolLM2-135M-Instruct is materialised (default: "
                               "$BLADE_HOME/models/SmolLM2-135M-Instruct)",
    "BLADE_PROGRESS_INTERVAL": "seconds between progress lines when stderr is not a terminal (default 30)",
    "BLADE_PLUGIN_DISABLE_HOOK": "1: switch off the LLaMA-Factory hook (templates, datasets, ${blade:...})",
    "BLADE_SMALL_BACKEND_API_KEY": "the vLLM servers' API key, with a vllm small backend",
}


def environment_epilog() -> str:
    return "\b\nEnvironment (besides each option's own):\n" + "\n".join(
        f"  {name}: {text}" for name, text in ENVIRONMENT.items())


def _with_environment(command: click.Command) -> click.Command:
    if command.epilog is None or "Environment (besides" not in command.epilog:
        command.epilog = ((command.epilog + "\n\n") if command.epilog else "") + environment_epilog()
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_environment(sub)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"blade_plugin.commands.{module_name}")
        return _with_environment(getattr(module, attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=environment_epilog())
@click.version_option(__version__, prog_name="blade-bpo")
@click.option("-v", "--verbose", count=True, help="More logging (-v info from libraries, -vv debug).")
def cli(verbose: int) -> None:
    """BLADE: pair a black-box LLM with a small domain model you train (DP -> KIT -> BPO -> evaluate)."""
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose == 0:
        # LLaMA-Factory and transformers log every config at INFO and draw a bar per weight load; our own
        # progress bars say what matters. Read at import time, so set before they are imported.
        os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # openai 3.x logs every request through `httpx2`, older versions through `httpx`
        for noisy in ("httpx", "httpx2", "openai", "transformers", "llamafactory", "datasets", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def interrupted_message() -> str:
    """What Ctrl-C leaves behind: the progress file of the running command and how to resume from it."""
    from .runs.outputs import resume_note

    note = resume_note()
    if note is None:
        return "Interrupted."
    if note.progress.exists():
        return f"Interrupted: finished work is saved in {note.progress}; {note.hint}."
    return "Interrupted before any work was saved."


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        # click turns Ctrl-C (KeyboardInterrupt) into Abort when standalone_mode is off
        click.echo(interrupted_message(), err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except BladeError as err:
        # A budget stop is not a failure of the input: its own exit status (3), so scripts can go on.
        stopped = getattr(err, "exit_code", None)
        click.echo(f"{'Stopped' if stopped else 'Error'}: {err}", err=True)
        sys.exit(stopped or 1)
    except KeyboardInterrupt:
        click.echo(interrupted_message(), err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
