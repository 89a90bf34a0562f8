"""The documentation stays true to the repository.

Checked in README.md, ARCHITECTURE.md, docs/*.md and benchmarks/README.md:

- every relative link (``[text](path)``, ``[text](path#anchor)``, images too) names a file
  or folder that exists, and an anchor names a heading of that page (GitHub's slugs);
- every ``qwq-edge COMMAND`` (and ``python -m qwq_edge COMMAND``) quoted in code names a
  command of the real click group (and a subcommand, where the command is a group), and
  the ``--flags`` quoted after it on that line are options of that command;
- every repository path quoted in code (``engines/base.py``, ``benchmarks/results/``) exists,
  and every ``qwq_edge.name.attribute`` quoted in code imports;
- every page under docs/ is linked from the README, and the front door stays short:
  README.md at most 300 lines, ARCHITECTURE.md at most 120.

The checks are functions over text; ``test_the_checks_catch_mistakes`` feeds them a page
with one mistake of each kind, so none of them passes by finding nothing.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from itertools import product
from pathlib import Path

import click
import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
README_LINES = 300
ARCHITECTURE_LINES = 120

FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
COMMAND = re.compile(r"(?:^|(?<=[\s(|;&$]))(?:qwq-edge|python3? -m qwq_edge)\s+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
INVOCATION_END = re.compile(r"[|;>`]|&&")
COMMENT = re.compile(r"(?:^|(?<=\s))#.*$", re.MULTILINE)
DOTTED = re.compile(r"\bqwq_edge(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"\bfrom\s+(qwq_edge(?:\.\w+)*)\s+import\s+([\w ,]+)")
PATH_LIKE = re.compile(r"^[\w.{},*/-]+$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def documents() -> list[Path]:
    """The pages checked: the front door, the map, the manual and the benchmarks' notes."""
    return [
        ROOT / "README.md",
        ROOT / "ARCHITECTURE.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "benchmarks" / "README.md",
    ]


def split_code(text: str) -> tuple[str, list[str]]:
    """The prose (code blanked out, lines kept) and the code: fenced blocks, then inline spans
    (each on one line)."""
    code: list[str] = []

    def blank(match: re.Match[str], keep: int) -> str:
        code.append(match.group(keep))
        return re.sub(r"[^\n]", " ", match.group(0))

    prose = FENCE.sub(lambda m: blank(m, 2), text)
    fenced = len(code)
    prose = INLINE_CODE.sub(lambda m: blank(m, 2), prose)
    return prose, code[:fenced] + [span.replace("\n", " ") for span in code[fenced:]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, links as their text, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors a page's headings make (a repeated heading gets ``-1``, ``-2``, … as on GitHub)."""
    prose = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(prose):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def shown(page: Path) -> str:
    """The page as the messages name it: relative to the repository when it is inside it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def broken_links(page: Path, text: str) -> list[str]:
    """Relative links of ``page`` (whose text is ``text``) to a missing file or heading."""
    prose, _ = split_code(text)
    problems = []
    for target in [*LINK.findall(prose), *REFERENCE_LINK.findall(prose)]:
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if file_part and not linked.exists():
            problems.append(f"{shown(page)}: link to a missing file: {target}")
        elif anchor and linked.suffix == ".md":
            headings = anchors(text if linked == page else linked.read_text(encoding="utf-8"))
            if anchor.lower() not in headings:
                problems.append(f"{shown(page)}: link to a missing heading: {target}")
    return problems


@cache
def command_group() -> click.Group:
    """The real ``qwq-edge`` click group (the console entry point, or the group it runs)."""
    module = importlib.import_module("qwq_edge.cli")
    for name in ("main", "cli"):
        if isinstance(getattr(module, name, None), click.Group):
            return getattr(module, name)
    raise AssertionError("qwq_edge.cli has no click group named main or cli")


def unknown_commands(page: Path, text: str, group: click.Group) -> list[str]:
    """``qwq-edge COMMAND [SUBCOMMAND]`` quoted in the page's code that the group does not have."""
    _, code = split_code(text)
    problems = []
    for piece in code:
        for match in COMMAND.finditer(COMMENT.sub("", piece)):
            name, sub = match.groups()
            command = group.commands.get(name)
            if command is None:
                problems.append(f"{shown(page)}: no command `qwq-edge {name}` (in: {match.group(0).strip()})")
            elif isinstance(command, click.Group) and sub and sub not in command.commands:
                problems.append(f"{shown(page)}: no command `qwq-edge {name} {sub}`")
    return problems


def option_names(command: click.Command) -> set[str]:
    return {"--help"} | {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def unknown_options(page: Path, text: str, group: click.Group) -> list[str]:
    """``--flags`` quoted after ``qwq-edge COMMAND`` (on the same line of code) that the command
    does not take; after `` -- `` (``qwq-edge launch … -- chat --model M``) they are the inner
    command's."""
    _, code = split_code(text)
    problems = []
    for line in (line for piece in code for line in COMMENT.sub("", piece).splitlines()):
        for match in COMMAND.finditer(line):
            name = match.group(1)
            rest = INVOCATION_END.split(line[match.end(1) :])[0]
            outer, _, inner = rest.partition(" -- ")
            calls = [(name, outer)]
            if inner.split()[:1] and inner.split()[0] in group.commands:
                calls.append((inner.split()[0], inner))
            for called, words in calls:
                command = group.commands.get(called)
                if command is None or isinstance(command, click.Group):
                    continue  # unknown_commands reports it; a group's options belong to its subcommands
                for flag in sorted(set(FLAG.findall(words)) - option_names(command)):
                    problems.append(f"{shown(page)}: `qwq-edge {called}` has no option {flag}")
    return problems


def expand_braces(path: str) -> list[str]:
    """``a/{b,c}.py`` → ``a/b.py``, ``a/c.py``."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(combo) for combo in product(*choices)]


@cache
def known_folders(base: Path) -> frozenset[str]:
    return frozenset(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".git"))


@cache
def repository_files() -> frozenset[str]:
    return frozenset(p.name for p in ROOT.rglob("*") if ".git" not in p.parts and p.is_file())


def missing_paths(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """Repository paths quoted as inline code that do not exist.

    A quoted path counts when it starts with a folder of the repository, of the package or
    of the page's own folder (``engines/base.py`` is read inside ``qwq_edge/``), or is a bare
    ``.py`` file name (found anywhere). Placeholders (``results/NAME.json``) and hub ids
    (``mlx-community/QwQ-32B-4bit``) are not paths of the repository and are left alone.
    """
    bases = (root, root / "qwq_edge", page.parent)
    folders = set().union(*(known_folders(base) for base in bases if base.is_dir()))
    problems = []
    for span in INLINE_CODE.findall(FENCE.sub("", text)):
        quoted = span[1].strip()
        if not PATH_LIKE.match(quoted) or ("/" not in quoted and not quoted.endswith(".py")):
            continue
        segments = [s for s in quoted.split("/") if s]
        if not segments or any(PLACEHOLDER.match(part) for s in segments for part in s.split(".")):
            continue
        if "/" not in quoted:
            if quoted not in repository_files():
                problems.append(f"{shown(page)}: no file named `{quoted}` in the repository")
            continue
        if segments[0] not in folders:
            continue
        found = any(list(base.glob(option.rstrip("/"))) for base in bases for option in expand_braces(quoted))
        if not found:
            problems.append(f"{shown(page)}: no such path: `{quoted}`")
    return problems


def resolve(dotted: str) -> bool:
    """Whether ``qwq_edge.a.b`` imports: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(value, name):
                return False
            value = getattr(value, name)
        return True
    return False


def unknown_names(page: Path, text: str) -> list[str]:
    """``qwq_edge.…`` names and ``from qwq_edge… import …`` quoted in code that do not import."""
    _, code = split_code(text)
    problems = []
    for piece in code:
        names = set(DOTTED.findall(piece))
        for module, imported in FROM_IMPORT.findall(piece):
            names |= {f"{module}.{name.strip()}" for name in imported.split(",") if name.strip()}
        problems += [f"{shown(page)}: `{name}` does not import" for name in sorted(names) if not resolve(name)]
    return problems


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_and_headings(page):
    assert page.exists(), f"{page} is missing"
    assert broken_links(page, page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_commands_exist(page):
    assert unknown_commands(page, page.read_text(encoding="utf-8"), command_group()) == []


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_options_exist(page):
    assert unknown_options(page, page.read_text(encoding="utf-8"), command_group()) == []


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_paths_exist(page):
    assert missing_paths(page, page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_placeholder_is_left_where_a_measured_table_goes(page):
    """A line that is only an upper-case name (``SOAK_TABLE``) waits for a benchmark's table."""
    placeholders = re.findall(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$", page.read_text(encoding="utf-8"), re.MULTILINE)
    assert placeholders == []


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_python_names_import(page):
    assert unknown_names(page, page.read_text(encoding="utf-8")) == []


def test_the_front_door_and_the_map_stay_short():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8").splitlines()
    assert len(readme) <= README_LINES, f"README.md has {len(readme)} lines; move detail to docs/"
    assert len(architecture) <= ARCHITECTURE_LINES, f"ARCHITECTURE.md has {len(architecture)} lines"


def test_every_docs_page_is_linked_from_the_readme():
    prose, _ = split_code((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(prose)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds no pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_the_package_readme_is_the_front_door():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["readme"] == "README.md"
    assert (ROOT / "README.md").is_file()
    # the CI command, named in the README as the one that runs the tests
    assert "python3 -m pytest" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m pytest" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_checks_catch_mistakes(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes!\n", encoding="utf-8")
    page = tmp_path / "page.md"
    text = "\n".join(
        [
            "# Page",
            "[fine](other.md#a-code-heading-yes) [fine too](#page) [web](https://example.com/x#y)",
            "[gone](missing.md) [no heading](other.md#nowhere) [no heading here](#nowhere)",
            "Run `qwq-edge chat`, then `qwq-edge frobnicate --now`.",
            "```bash",
            "qwq-edge serve --model m --no-such-flag  # qwq-edge comments --are-not checked",
            "qwq-edge launch -n 2 --dry-run -- chat --model m --nope",
            "python -m qwq_edge nonsense",
            "```",
            "`engines/base.py` `engines/no_such_module.py` `no_such_file.py` `results/NAME.json`",
            "`qwq_edge.load` `qwq_edge.no_such_name` `mlx-community/QwQ-32B-4bit`",
        ]
    )
    assert broken_links(page, text) == [
        "page.md: link to a missing file: missing.md",
        "page.md: link to a missing heading: other.md#nowhere",
        "page.md: link to a missing heading: #nowhere",
    ]
    assert sorted(p.split("(")[0] for p in unknown_commands(page, text, command_group())) == [
        "page.md: no command `qwq-edge frobnicate` ",
        "page.md: no command `qwq-edge nonsense` ",
    ]
    assert unknown_options(page, text, command_group()) == [
        "page.md: `qwq-edge serve` has no option --no-such-flag",
        "page.md: `qwq-edge chat` has no option --nope",
    ]
    assert missing_paths(page, text) == [
        "page.md: no such path: `engines/no_such_module.py`",
        "page.md: no file named `no_such_file.py` in the repository",
    ]
    assert unknown_names(page, text) == ["page.md: `qwq_edge.no_such_name` does not import"]
    group = click.Group(commands={"models": click.Group(name="models", commands={"pull": click.Command("pull")})})
    assert unknown_commands(page, "`qwq-edge models pull x` `qwq-edge models push`", group) == [
        "page.md: no command `qwq-edge models push`"
    ]
    assert slug("Serve it: `qwq-edge serve`, an OpenAI-compatible server") == (
        "serve-it-qwq-edge-serve-an-openai-compatible-server"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
