"""The layout's one rule that a linter can miss: the pure core never reaches the edges.

features/, forecasting/, buffers/ and evaluation/ compute, pipeline/ chains them into stages and shapes the published
tables, configs/ holds the one config schema; flows/ orchestrates, reads, writes and tracks. A core module that
imported flows/, prefect or mlflow (even inside a function, where ruff's banned-api rule also looks, or via
importlib) would tie the maths to the orchestrator. This walks every import statement of every core module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ("features", "forecasting", "buffers", "evaluation", "pipeline", "configs")
BELOW_PIPELINE = ("features", "forecasting", "buffers", "evaluation")
EDGES = {"flows", "prefect", "mlflow"}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"import_module", "__import__"}:
            names |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return names


CORE_FILES = sorted(p for package in CORE for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_flows_prefect_or_mlflow(path: Path):
    reached = {name for name in _imported_modules(path) if name.split(".")[0] in EDGES}
    assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}: the core must stay free of orchestration and I/O"


def test_the_walk_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import mlflow.tracking\nfrom prefect import flow\ndef f():\n    import importlib\n    importlib.import_module('flows.plan')\n"
    )
    assert {"mlflow.tracking", "prefect", "flows.plan"} <= _imported_modules(probe)
    assert len(CORE_FILES) > 20


@pytest.mark.parametrize(
    "path", [p for p in CORE_FILES if p.relative_to(ROOT).parts[0] in BELOW_PIPELINE], ids=lambda p: str(p.relative_to(ROOT))
)
def test_dependencies_point_one_way(path: Path):
    """The computing packages never import the pipeline that chains them (configs/ is imported for its types only)."""
    reached = {name for name in _imported_modules(path) if name.split(".")[0] == "pipeline"}
    assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}: pipeline/ wires the core, not the reverse"


def test_the_flow_file_is_the_flow_diagram():
    """flows/plan.py wires tasks: no polars (table shaping lives in pipeline/), and short enough to read whole."""
    plan = ROOT / "flows" / "plan.py"
    assert "polars" not in _imported_modules(plan)
    assert len(plan.read_text(encoding="utf-8").splitlines()) < 250


@pytest.mark.parametrize("name", ["plan", "tasks", "cli", "deploy", "publish", "tracking"])
def test_the_wiring_shapes_no_tables(name: str):
    """Table shaping (polars expressions) lives in pipeline/; of flows/, only the readers (sources.py, sales_cache.py) and the sample
    data generator build frames."""
    text = (ROOT / "flows" / f"{name}.py").read_text(encoding="utf-8")
    found = [token for token in ("pl.col(", "pl.lit(", ".with_columns(", ".group_by(", ".filter(pl.", ".select(") if token in text]
    assert not found, f"flows/{name}.py uses {found}: shape tables in pipeline/ (tables.py, report.py)"


#: Libraries that cost seconds to import (bench/fixed_cost.py measures each): imported by the step that uses them, not
#: with the flow (docs/architecture.md).
HEAVY = ("mlflow", "matplotlib", "sklearn", "statsmodels", "statsforecast", "scipy.stats", "scipy.optimize", "dask", "distributed")


def test_the_plan_flow_imports_no_heavy_library_before_it_needs_it():
    """`buffercast run` imports flows.plan: a run that fails on its input (or a command that plans nothing) must not pay
    for MLflow, the plots, the calibration's sklearn or the forecasters; each is imported by the step that uses it."""
    probe = (
        "import sys, flows.cli, flows.plan; heavy = sys.argv[1:]; "
        "print(' '.join(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))))"
    )
    done = subprocess.run([sys.executable, "-c", probe, *HEAVY], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"importing the plan flow imported {done.stdout.split()[:12]}"
