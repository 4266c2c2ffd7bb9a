"""The layers of docs/ARCHITECTURE.md 2, read from the imports: each package imports only its own
layer and the layers below it, and Ray, MLflow stay in the layers that own them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Rank of each package of `study`; a module may import packages of lower or equal rank only.
RANK = {
    "study": 0,  # the package itself: its version
    "study.errors": 0,
    "study.strict": 0,
    "study.watchdog": 0,
    "study.metrics_names": 0,
    "study.process_state": 0,
    "study.redact": 0,
    "study.paths": 0,
    "study.data": 1,
    "study.models": 1,
    "study.perturbations": 1,
    "study.metrics": 1,
    "study.conformal": 1,
    "study.spec": 2,
    "study.training": 3,
    "study.tracking": 3,
    "study.serving": 4,
    "study.run": 5,
    "study.cli": 6,
    "study.__main__": 7,
}
# Third-party libraries each layer owns: nothing below uses them.
# study.process_state holds every process-wide change, Ray's actor-variable cache among them; it
# imports Ray inside that one function only, so importing it costs nothing.
OWNERS = {
    "ray": {"study.run", "study.cli", "study.process_state"},
    "mlflow": {"study.tracking", "study.serving", "study.run"},
}
ANALYSIS_MAY_NOT = ("study.run", "study.training", "study.serving", "study.cli", "ray")
# analysis/ by job, bottom up: reading MLflow into frames, statistics on frames, figures, commands.
ANALYSIS_RANK = {"analysis": 0, "analysis.read": 0, "analysis.stats": 1, "analysis.plots": 2, "analysis.commands": 3}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "study":  # `from study import metrics_names`
                found.update(f"study.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("study", "analysis") and len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_package_of_study_has_a_rank():
    packages = {package_of(module_name(p)) for p in (ROOT / "study").rglob("*.py")}
    assert packages <= set(RANK), f"give these a layer in RANK and docs/ARCHITECTURE.md: {packages - set(RANK)}"


def test_imports_run_one_way_down_the_layers():
    upward = []
    for path in sorted((ROOT / "study").rglob("*.py")):
        me = package_of(module_name(path))
        for target in imports(path):
            there = package_of(target)
            if there in RANK and RANK[there] > RANK[me]:
                upward.append(f"{module_name(path)} imports {target}")
            if there in OWNERS and me not in OWNERS[there]:
                upward.append(f"{module_name(path)} imports {target}, which only {sorted(OWNERS[there])} may")
    assert upward == []


def test_analysis_reads_mlflow_and_never_the_run_or_training_layers():
    found = [
        f"{module_name(p)} imports {t}"
        for p in sorted((ROOT / "analysis").rglob("*.py"))
        for t in imports(p)
        if t.startswith(ANALYSIS_MAY_NOT)
    ]
    assert found == []


def test_every_module_of_analysis_sits_in_a_job_package():
    loose = [module_name(p) for p in (ROOT / "analysis").rglob("*.py") if package_of(module_name(p)) not in ANALYSIS_RANK]
    assert loose == [], "put these in analysis/read, stats, plots or commands (docs/ARCHITECTURE.md 2)"


def test_analysis_imports_run_one_way_down_its_jobs():
    upward = [
        f"{module_name(p)} imports {t}"
        for p in sorted((ROOT / "analysis").rglob("*.py"))
        for t in imports(p)
        if package_of(t) in ANALYSIS_RANK and ANALYSIS_RANK[package_of(t)] > ANALYSIS_RANK[package_of(module_name(p))]
    ]
    assert upward == []
