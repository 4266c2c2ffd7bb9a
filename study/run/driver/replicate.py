"""A replicate of a finished study: its confirm phase again, under new seeds, with the hyperparameters
the study chose (`segstudy replicate`).

The replicate is a study of its own (its folder, its MLflow study run in the same experiment, tagged
`segstudy.replicate_of` with the original's study run id), so it is stopped, resumed and reported
like any study; its spec is the original's with `confirm.seeds` set to the new seeds, and its folder
starts with the original's chosen hyperparameters, so no tuning runs. Whether the original's
statements hold in it is `analysis.stats.statements.replication`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study import metrics_names as M
from study.errors import SegstudyError
from study.run.record.bucket_study import create_study, find_study, study_root
from study.run.record.study_dir import StudyDir
from study.storage import Root
from study.spec import StudySpec, parse_spec
from study.tracking import StudyTracker

MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take it


@dataclass(frozen=True)
class Replicate:
    """What a replicate of `original` runs: the spec with the new seeds, and what it starts from."""

    original: StudyDir
    spec: StudySpec
    spec_text: str
    seeds: tuple[int, ...]
    original_run_id: str
    chosen: dict[str, Any] | None

    def maker(self, storage: str | Path | None, *, tracking_uri: str, state_db: str | None = None) -> Callable[[], StudyDir]:
        """Check where the replicate goes and return what makes its folder there: under `storage`,
        by default beside the original (its folder's parent, or its bucket prefix, under the
        original's state database).

        Raises:
            SegstudyError: a storage, bucket or state database that cannot be used (`study_root`).
        """
        where = storage if storage is not None else self.original.parent
        root, url = study_root(where, state_db=state_db or getattr(self.original, "state_db", None), tracking_uri=tracking_uri)
        return lambda: self.create(root, tracking_uri=tracking_uri, state_db=url)

    def create(self, storage: Root, *, tracking_uri: str, state_db: str | None = None) -> StudyDir:
        """The replicate's folder under `storage` (a local folder, or a bucket prefix with its
        state database), with the original's chosen hyperparameters (so no tuning runs)."""
        with tempfile.TemporaryDirectory(prefix="segstudy-replicate-") as tmp:
            spec_file = Path(tmp) / "spec.yaml"
            spec_file.write_text(self.spec_text)
            study = create_study(storage, name=self.spec.name, spec_file=spec_file, tracking_uri=tracking_uri,
                                 state_db=state_db)
        extra: dict[str, Any] = {"chosen": self.chosen} if self.chosen is not None else {}
        study.update(
            spec_source=f"{self.original.where('spec.yaml')} with confirm.seeds {list(self.seeds)}",
            replicate_of={"study_run_id": self.original_run_id, "folder": self.original.location, "seeds": list(self.seeds)},
            **extra,
        )
        return study


def original_of(found: StudyDir) -> StudyDir:
    """The study a folder replicates, or the folder itself (a replicate of a replicate is one of its original)."""
    link = found.manifest.get("replicate_of")
    if not (isinstance(link, dict) and link.get("folder")):
        return found
    return find_study(link["folder"], state_db=getattr(found, "state_db", None), writing=False)


def plan_replicate(found: StudyDir, seeds: Sequence[int], *, tracker: StudyTracker) -> Replicate:
    """Check that the study can be replicated with `seeds` and say what the replicate runs.

    Raises:
        SegstudyError: no seeds, seeds out of range, repeated, or already trained by the study; a
            study that has not finished (interrupted, failed, still running) or whose chosen
            hyperparameters are missing.
    """
    original = original_of(found)
    manifest = original.manifest
    text = original.spec_file.read_text()
    spec = parse_spec(yaml.safe_load(text), source=str(original.spec_file))
    seeds = tuple(int(s) for s in seeds)
    used = set(spec.confirm_seeds)
    if not seeds:
        raise SegstudyError("--seeds: give the new confirm seeds, e.g. --seeds 3,4,5")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise SegstudyError(f"--seeds {','.join(map(str, seeds))}: seeds must be whole numbers from 0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise SegstudyError(f"--seeds {','.join(map(str, seeds))}: each seed once")
    again = sorted(used & set(seeds))
    if again:
        fresh = [s for s in range(max(used) + 1, max(used) + 1 + len(seeds))]
        raise SegstudyError(
            f"--seeds: {', '.join(map(str, again))} already trained in {original.path.name} (its confirm seeds are "
            f"{_seeds_text(spec)}); a replicate needs new seeds, e.g. --seeds {','.join(map(str, fresh))}"
        )
    run_id = manifest.get("study_run_id")
    if not run_id:
        raise SegstudyError(f"{original.location}: the study has no MLflow study run yet; run it to the end before replicating it")
    state = tracker.client.get_run(tracker.real_id(run_id)).data.tags.get(M.STATE_TAG)
    if state != M.STATE_FINISHED:
        raise SegstudyError(
            f"{original.path.name}: the study is {state or 'not finished'}, not finished; `segstudy resume {original.location}` "
            "first, then replicate it"
        )
    if spec.tuning is not None and "chosen" not in manifest:
        raise SegstudyError(f"{original.where('study.json')}: no chosen hyperparameters recorded; the tune phase did not finish")
    raw = yaml.safe_load(text)
    raw.pop("seeds", None)
    raw["confirm"] = {"seeds": list(seeds)}  # a fixed list: resolve belongs to a seed budget
    replica_text = (f"# A replicate of {original.path.name} (study run {tracker.real_id(run_id)}): its confirm phase under "
                    f"new seeds.\n{yaml.safe_dump(raw, sort_keys=False)}")
    return Replicate(original, parse_spec(raw, source=str(original.spec_file)), replica_text, seeds, tracker.real_id(run_id),
                     manifest.get("chosen"))


def _seeds_text(spec: StudySpec) -> str:
    budget = spec.confirm.budget
    if budget is not None:
        return f"up to 0-{budget.max - 1} (a budget)"
    return ", ".join(map(str, spec.confirm_seeds))


__all__ = ["MAX_SEED", "Replicate", "original_of", "plan_replicate"]
