"""The README's commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    test_cmds = [b.strip() for b in _bash_blocks(readme) if "pytest" in b]
    assert len(test_cmds) == 1
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmds[0] in ci_lines


def test_readme_main_command_uses_shipped_recipe_and_real_subcommands():
    from napari_ktal.cli import build_parser
    from napari_ktal.core.recipe import builtin_recipes
    readme = (ROOT / "README.md").read_text()
    main_cmd = _bash_blocks(readme)[0]
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    used = re.findall(r"ktal-cryo (\S+)", main_cmd)
    assert used == ["simulate", "train"] and set(used) <= subcommands
    assert re.search(r"--recipe (\S+)", main_cmd).group(1) in builtin_recipes()


def test_readme_strategy_table_is_the_registry():
    from napari_ktal.core.strategies import strategy_table
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- strategies:start -->\n(.*?)\n<!-- strategies:end -->", readme, flags=re.S)
    assert block, "README.md has no strategy table between its markers"
    assert block.group(1) == strategy_table(), "README's strategy table is stale: paste `ktal-cryo strategies`"
