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
    "study.disk": 0,
    "study.driver_lock": 0,
    "study.targets": 0,
    "study.data": 1,
    "study.models": 1,
    "study.perturbations": 1,
    "study.metrics": 1,
    "study.conformal": 1,
    "study.spec": 2,
    "study.training": 3,
    "study.tracking": 3,
    "study.storage": 3,  # study folders in a bucket, tuning state in PostgreSQL
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
    "pyarrow": {"study.storage"},  # S3 as Ray Tune writes to it (study/storage/s3.py)
}
ANALYSIS_MAY_NOT = ("study.run", "study.training", "study.serving", "study.cli", "ray")
# analysis/ by job, bottom up: reading MLflow into frames, statistics on frames, figures, commands.
ANALYSIS_RANK = {"analysis": 0, "analysis.read": 0, "analysis.stats": 1, "analysis.plots": 2, "analysis.commands": 3}
# Inside a layer that has grown sub-packages by job, bottom up: imports between them run one way down too.
# A module of the layer outside every sub-package (study.training.trial) has the layer's own entry.
JOB_RANK = {
    "study.run": {
        "study.run": 0,  # the package itself: its docstring
        "study.run.record": 0,  # the study folder, its MLflow study run, reconcile
        "study.run.cluster": 0,  # Ray itself: connect, capacity, warm workers, reaper, submit
        "study.run.tune": 1,  # the Tune glue: trainable, searcher, scheduler, stopper, reports
        "study.run.display": 2,  # what the user watches
        "study.run.driver": 3,  # the study as a whole: engine, phases, rounds, preflight
    },
    "analysis.stats": {
        "analysis.stats": 0,  # the package itself: its docstring
        "analysis.stats.core": 0,  # the one inference, multiple testing, the sentence, frame checks
        "analysis.stats.describe": 1,  # summaries, robustness, coverage, FBR placement, shift tables
        "analysis.stats.statements": 2,  # findings, claims, breakdown, pairwise, sequential, replication
    },
    "study.training": {
        "study.training.device": 0,  # GPU specifics: autocast, resident splits, utilisation
        "study.training.evaluation": 0,  # scores, conditions, conformal bounds, the learning gate
        "study.training.inputs": 1,  # the study's data, whole images or patches
        "study.training": 2,  # the trial itself: trial, plan, loop, checkpoints
    },
}
MAX_MODULES = 12  # "When a package grows past a dozen modules, give it sub-packages by job"


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
    """The layer (or analysis job) of a module: its package directly under study/ or analysis/;
    sub-packages (study.run.driver) share their parent's layer."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("study", "analysis") and len(parts) > 1 else parts[0]


def job_of(module: str) -> str:
    """The job package of a module inside a layer of JOB_RANK (study.run.driver.engine -> study.run.driver);
    the layer itself for a module outside its sub-packages."""
    layer = package_of(module)
    parts = module.split(".")
    sub = ".".join(parts[:3])
    return sub if len(parts) > 3 or (len(parts) == 3 and (ROOT / Path(*parts)).is_dir()) else layer


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


def test_every_job_package_has_a_rank():
    jobs = {job_of(module_name(p)) for layer in JOB_RANK for p in (ROOT / Path(*layer.split("."))).rglob("*.py")}
    ranked = {job for ranks in JOB_RANK.values() for job in ranks}
    assert jobs <= ranked, f"give these a rank in JOB_RANK and docs/ARCHITECTURE.md 2: {jobs - ranked}"


def test_imports_run_one_way_down_the_jobs_of_a_layer():
    upward = []
    for layer, ranks in JOB_RANK.items():
        for path in sorted((ROOT / Path(*layer.split("."))).rglob("*.py")):
            me = job_of(module_name(path))
            for target in imports(path):
                there = job_of(target)
                if there in ranks and ranks[there] > ranks[me]:
                    upward.append(f"{module_name(path)} imports {target}")
    assert upward == []


def test_no_package_holds_more_than_a_dozen_modules():
    crowded = {
        module_name(init.parent): n
        for top in ("study", "analysis")
        for init in (ROOT / top).rglob("__init__.py")
        if (n := len([p for p in init.parent.glob("*.py") if p.name != "__init__.py"])) > MAX_MODULES
    }
    assert crowded == {}, "give these sub-packages by job (docs/ARCHITECTURE.md 2)"


def test_every_module_of_study_run_sits_in_a_job_package():
    loose = [module_name(p) for p in (ROOT / "study" / "run").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "put these in a sub-package of study/run (docs/ARCHITECTURE.md 2)"


def test_modules_import_each_other_one_way():
    """No two modules import each other, directly or round a longer loop, counting the imports
    inside functions too: a cycle hidden in a function still means neither module stands alone
    (study/models/unet_builder.py is why the U-Net family's two networks no longer do)."""
    paths = [p for top in ("study", "analysis") for p in (ROOT / top).rglob("*.py")]
    known = {module_name(p) for p in paths}
    edges: dict[str, set[str]] = {}
    for path in paths:
        me = module_name(path)
        # `from study.models import x` names a package: it is an edge to the package's __init__,
        # which re-exports; a module's own package __init__ is not its dependency.
        edges[me] = {t for t in imports(path) if t in known and t != me and not me.startswith(f"{t}.")}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
