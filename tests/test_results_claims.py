"""The claims table at the top of bench/RESULTS.md cites commands and figure names that exist.

For every row: each bench script its command names exists under ``bench/``, and each figure name
the row cites is a key that script prints as a ``name: value`` line. Bench scripts collect their
figures in dicts (``figures["x"] = ...``, ``{"x": ...}``, ``{f"{label}_x": ...}``) and print them
last with ``print(f"{name}: {value}")``, so a name is accepted when it equals a string key of such a
dict, or fits an f-string key whose placeholders are filled by digits or by the string constants
the placeholder's expression comes from (``label = SPACE_LABELS[space]``: that dict's strings; a
placeholder bound by iterating a dict's ``items()`` / ``keys()`` is filled by another key). A
renamed key, or a renamed constant a key is built from, fails. Rows whose command runs tests
name test files that must exist and test functions they must define. Only files are read: no bench
script, and so no torch, is imported.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
COLUMNS = ("claim", "today's figure", "target", "met", "command", "figure name", "commit")
BENCH_SCRIPT = re.compile(r"\bbench/[\w/]+\.py\b")
TEST_PATH = re.compile(r"\btests/[\w/.]*")


@dataclass(frozen=True)
class Claim:
    line: int
    cells: dict[str, str]

    @property
    def scripts(self) -> list[str]:
        return BENCH_SCRIPT.findall(self.cells["command"])

    @property
    def names(self) -> list[str]:
        return re.findall(r"`([^`]+)`", self.cells["figure name"])

    def __str__(self) -> str:
        return f"bench/RESULTS.md:{self.line} ({self.cells['claim']})"


def claims_table(text: str) -> list[Claim]:
    """The rows of the first table under ``## Claims``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Claims"), None)
    assert start is not None, "bench/RESULTS.md has no '## Claims' section"
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append((number, [cell.strip() for cell in line.strip().strip("|").split("|")]))
        elif rows:
            break  # the table ended
    assert len(rows) > 2, "the Claims section holds no table"
    header = [cell.lower() for cell in rows[0][1]]
    assert tuple(header) == COLUMNS, f"claims table columns {header}, expected {list(COLUMNS)}"
    claims = []
    for number, cells in rows[2:]:  # rows[1] is the |---| separator
        assert len(cells) == len(COLUMNS), f"bench/RESULTS.md:{number}: {len(cells)} cells, expected {len(COLUMNS)}"
        claims.append(Claim(number, dict(zip(COLUMNS, cells, strict=True))))
    return claims


# --- what a bench script prints -------------------------------------------------------------------------

Part = tuple[str, str | frozenset[str]]  # ("text", literal), ("key", ""), ("const", candidate fillers)
Template = tuple[Part, ...]


@dataclass(frozen=True)
class PrintedKeys:
    """The figure keys one bench script can print, read from its source."""

    literals: frozenset[str]  # string dict keys
    templates: tuple[Template, ...]  # f-string dict keys
    prints_name_value: bool  # it has a print(f"{name}: {value}") to stdout

    def prints(self, name: str) -> bool:
        return self._key(name, frozenset())

    def _key(self, name: str, used: frozenset[int]) -> bool:
        """``name`` is a literal key, or fits a template not already used on the way here (so a
        generic ``f"{name}_{label}"`` cannot be chained with itself into any name at all)."""
        if name in self.literals:
            return True
        return any(self._fits(template, 0, name, 0, used | {i})
                   for i, template in enumerate(self.templates) if i not in used)

    def _fits(self, template: Template, part: int, name: str, pos: int, used: frozenset[int]) -> bool:
        if part == len(template):
            return pos == len(name)
        kind, text = template[part]
        if kind == "text":
            assert isinstance(text, str)
            return name.startswith(text, pos) and self._fits(template, part + 1, name, pos + len(text), used)
        for end in range(pos + 1, len(name) + 1):
            filler = name[pos:end]
            fills = self._key(filler, used) if kind == "key" else filler.isdigit() or filler in text
            if fills and self._fits(template, part + 1, name, end, used):
                return True
        return False


class Source:
    """One script's syntax tree with what its names are bound to (by name, ignoring scopes: a bench
    script is small, and a looser match only accepts more fillers)."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.bindings: dict[str, list[ast.expr]] = {}
        self.key_names: set[str] = set()  # bound as the key of `for k, v in d.items()` / `d.keys()`
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                self._bind(node.target, node.value)
            elif isinstance(node, (ast.For, ast.comprehension)):
                self._bind(node.target, node.iter)
                loop_iter, target = node.iter, node.target
                if (isinstance(loop_iter, ast.Call) and isinstance(loop_iter.func, ast.Attribute)
                        and loop_iter.func.attr in ("items", "keys")):
                    first = target.elts[0] if isinstance(target, ast.Tuple) and target.elts else target
                    if isinstance(first, ast.Name):
                        self.key_names.add(first.id)
        self.constants = frozenset(n.value for n in ast.walk(tree)
                                   if isinstance(n, ast.Constant) and isinstance(n.value, str))

    def _bind(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.bindings.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):  # `for label, x in (("a", ...), ...)`: the whole iterable
            for element in target.elts:
                self._bind(element, value)

    def fillers(self, expression: ast.expr) -> frozenset[str]:
        """The string constants a placeholder's expression can come from: those inside it and inside
        what its names are bound to (`label = SPACE_LABELS[space]`, `for method in METHODS`); every
        constant of the script when none is found (a function parameter, a computed number)."""
        found: set[str] = set()
        seen: set[str] = set()
        pending = [expression]
        while pending:
            for node in ast.walk(pending.pop()):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
                elif isinstance(node, ast.Name) and node.id not in seen:
                    seen.add(node.id)
                    pending += self.bindings.get(node.id, [])
        return frozenset(found) or self.constants

    def key_expressions(self) -> list[ast.expr]:
        """Expressions used as dict keys: dict displays, dict comprehensions and subscript assignments
        (`key = f"nelbo_{method}_{percent}"; figures[key] = ...` counts the f-string)."""
        keys: list[ast.expr] = []

        def store(target: ast.expr) -> None:
            if isinstance(target, ast.Subscript):
                index = target.slice
                keys.extend(self.bindings.get(index.id, []) if isinstance(index, ast.Name) else [index])
            elif isinstance(target, (ast.Tuple, ast.List)):
                for element in target.elts:
                    store(element)

        for node in ast.walk(self.tree):
            if isinstance(node, ast.Dict):
                keys.extend(k for k in node.keys if k is not None)
            elif isinstance(node, ast.DictComp):
                keys.append(node.key)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    store(target)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                store(node.target)
        return keys

    def template(self, node: ast.JoinedStr) -> Template:
        parts: list[Part] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(("text", value.value))
            elif isinstance(value, ast.FormattedValue):
                if isinstance(value.value, ast.Name) and value.value.id in self.key_names:
                    parts.append(("key", ""))
                else:
                    parts.append(("const", self.fillers(value.value)))
        return tuple(parts)


def _prints_name_value(tree: ast.AST) -> bool:
    """Whether the script prints ``f"{name}: {value}"`` lines to stdout."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                and not any(k.arg == "file" for k in node.keywords) and node.args
                and isinstance(node.args[0], ast.JoinedStr)):
            values = node.args[0].values
            if (len(values) >= 3 and isinstance(values[0], ast.FormattedValue) and isinstance(values[1], ast.Constant)
                    and values[1].value == ": " and isinstance(values[2], ast.FormattedValue)):
                return True
    return False


@functools.cache
def printed_keys(script: str) -> PrintedKeys:
    tree = ast.parse((ROOT / script).read_text(), filename=script)
    source = Source(tree)
    literals: set[str] = set()
    templates: list[Template] = []
    pending = source.key_expressions()
    while pending:
        key = pending.pop()
        if isinstance(key, ast.IfExp):  # {f"{name}_{label}" if several else name: value ...}
            pending += [key.body, key.orelse]
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            literals.add(key.value)
        elif isinstance(key, ast.JoinedStr):
            template = source.template(key)
            if any(kind == "text" and text for kind, text in template):  # a bare f"{x}" says nothing
                templates.append(template)
    return PrintedKeys(frozenset(literals), tuple(templates), _prints_name_value(tree))


# --- the tests --------------------------------------------------------------------------------------------

CLAIMS = claims_table(RESULTS.read_text())


def test_the_table_covers_the_benchmarks() -> None:
    assert len(CLAIMS) >= 20
    cited = {script for claim in CLAIMS for script in claim.scripts}
    for script in ("bench/model_quality.py", "bench/pruning_methods.py", "bench/nested_quality.py",
                   "bench/compress_speed.py", "bench/cost_speed.py", "bench/cost_model_accuracy.py",
                   "bench/proxy_fidelity.py", "bench/proxy_speed.py", "bench/search_efficiency.py",
                   "bench/quickstart_validation.py"):
        assert script in cited, f"no claim cites {script}"


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.cells["claim"][:60] for c in CLAIMS])
def test_a_claim_is_complete(claim: Claim) -> None:
    for column in COLUMNS:
        assert claim.cells[column], f"{claim}: empty {column!r}"
    assert claim.cells["met"] in ("yes", "no"), f"{claim}: met is {claim.cells['met']!r}, expected yes or no"
    assert re.match(r"[0-9a-f]{7,40}\b", claim.cells["commit"]), f"{claim}: commit {claim.cells['commit']!r}"


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.scripts], ids=lambda c: c.cells["claim"][:60])
def test_a_bench_claim_cites_a_script_that_prints_its_figures(claim: Claim) -> None:
    assert len(set(claim.scripts)) == 1, f"{claim}: one bench script per claim, got {claim.scripts}"
    script = claim.scripts[0]
    assert (ROOT / script).is_file(), f"{claim}: {script} does not exist"
    keys = printed_keys(script)
    assert keys.prints_name_value, f"{script} prints no 'name: value' lines"
    assert claim.names, f"{claim}: no figure name"
    missing = [name for name in claim.names if not keys.prints(name)]
    assert not missing, f"{claim}: {script} prints no figure named {missing}"


@pytest.mark.parametrize("claim", [c for c in CLAIMS if TEST_PATH.search(c.cells["command"])],
                         ids=lambda c: c.cells["claim"][:60])
def test_a_test_claim_cites_tests_that_exist(claim: Claim) -> None:
    paths = [ROOT / p.rstrip(".") for p in TEST_PATH.findall(claim.cells["command"])]
    for path in paths:
        assert path.exists(), f"{claim}: {path.relative_to(ROOT)} does not exist"
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("test_*.py")))]
    source = "\n".join(f.read_text() for f in files)
    for name in claim.names:
        if name.startswith("test_"):
            assert re.search(rf"^\s*def {re.escape(name)}\(", source, re.M), f"{claim}: no test {name}"


def test_the_matcher_rejects_renamed_figures(tmp_path: Path) -> None:
    """A name must be a printed key, not any text of the script (checks the checker)."""
    script = tmp_path / "bench_example.py"
    script.write_text(
        '"""Prints hv_gain and other things."""\n'
        'FORMATS = ("int8_dyn", "struct50")\n'
        'LABELS = {"default": "random"}\n'
        'def inner():\n'
        '    return {"mape_pct": 1.0}\n'
        'def main():\n'
        '    figures = {"seconds": 1.0}\n'
        '    for key, value in inner().items():\n'
        '        figures[f"calibrated_{key}"] = value\n'
        '    for fmt in FORMATS:\n'
        '        for m in (1, 16):\n'
        '            figures[f"layer_M{m}_{fmt}_vs_fp32"] = 1.0\n'
        '    figures |= {f"spearman_low_{LABELS[s]}": 1.0 for s in LABELS}\n'
        '    key = f"nelbo_{FORMATS[0]}_{round(100 * 0.5)}"\n'
        '    figures[key] = 1.0\n'
        '    runs = {"low": 1.0}\n'
        '    for s in LABELS:\n'
        '        label = LABELS[s]\n'
        '        figures[f"rho_{label}"] = runs["low"]\n'
        '    out = {f"embedded_{k}": v for k, v in figures.items()}\n'
        '    out |= {f"{k}_{label}": v for k, v in figures.items()}\n'
        '    for name, value in out.items():\n'
        '        print(f"{name}: {value:.4f}")\n')
    keys = printed_keys(str(script))  # an absolute path: ROOT / it is itself
    assert keys.prints_name_value
    for name in ("embedded_seconds", "embedded_calibrated_mape_pct", "embedded_layer_M16_int8_dyn_vs_fp32",
                 "embedded_spearman_low_random", "embedded_nelbo_int8_dyn_50", "rho_random_random",
                 "embedded_rho_random"):
        assert keys.prints(name), name
    for name in ("hv_gain", "embedded_calibrated_mape", "embedded_layer_M16_int4_vs_fp32",
                 "layer_M16_int8_dyn_over_fp32", "embedded_spearman_random", "embedded_spearman_low_light",
                 "embedded", "embedded_nelbo_wanda", "rho_low_random", "rho_random_random_random"):
        assert not keys.prints(name), name
