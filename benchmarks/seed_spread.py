"""Where the between-seed spread at the breakdown comes from, and which recipe removes it.

    .venv/bin/python benchmarks/seed_spread.py --level 0.93 --seeds 10 --variant baseline
    .venv/bin/python benchmarks/seed_spread.py --summary benchmarks/seed_spread.jsonl

Trains every arm of a 2D study spec (default: search_spaces/skip_vs_complexity.yaml) at one
complexity level under n seeds, without Ray or MLflow, with the study's own data, networks, loss,
optimiser and evaluation (`study.training`). Every epoch it scores the validation and the test split
with the live weights and, when the variant averages weights, with the averaged ones, so one run
answers several questions at once:

* checkpoint selection: test Dice of the best-validation epoch (what the study tests) against the
  last epoch, the mean of the last epochs, and the best test epoch (an oracle no study has: the
  spread that is left there is not selection's);
* initialisation against batch order: `--vary init` keeps the batch order of seed 0 and draws the
  initial weights from each seed, `--vary order` the reverse (`--vary both`, the default, is what a
  study does);
* the recipe: learning rate, schedule with warm-up, gradient clipping, weight averaging (EMA or
  SWA, torch.optim.swa_utils), a larger validation split (`--n-images`, `--val`).

Each (arm, seed) run appends one JSON line to `--out`; `--summary` prints, per variant and arm, the
between-seed SD and mean of test Dice under each selection rule.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine  # noqa: E402
from study.models import build_network, memory_format, resolve_architecture  # noqa: E402
from study.spec import Hyperparameters, load_spec  # noqa: E402
from study.training.evaluation.evaluate import dice_per_image  # noqa: E402
from study.training.inputs.strategies import WholeImages  # noqa: E402
from study.training.inputs.study_data import build_study_data  # noqa: E402
from study.training.loop import build_loss, build_optimizer, build_schedule  # noqa: E402

SPEC = ROOT / "search_spaces" / "skip_vs_complexity.yaml"
LAST_K = 5  # "mean of the last epochs": how many


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", type=Path, default=SPEC)
    p.add_argument("--level", type=float, default=0.93, help="the complexity level (alpha)")
    p.add_argument("--arms", default="unet,noskip_unet,attention_unet,nested_unet")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--variant", default="baseline", help="a label for the summary")
    p.add_argument("--vary", choices=["both", "init", "order"], default="both")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="default: the spec's")
    p.add_argument("--schedule", choices=["constant", "cosine"], default=None, help="default: the spec's")
    p.add_argument("--loss", choices=["dice", "dice_ce"], default=None, help="default: the spec's")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None, help="default: the spec's")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--flips", action="store_true", help="random flips of image and mask (the same per pair)")
    p.add_argument("--shifts", type=int, default=0, help="random translation of image and mask by up to this many pixels")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up epochs (default: the spec's)")
    p.add_argument("--clip", type=float, default=None, help="gradient-norm clip (0: none; default: the spec's)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay per step (0: none)")
    p.add_argument("--swa-start", type=float, default=0.0, help="SWA from this share of the epochs (0: none)")
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--placement", choices=["centred", "anywhere"], default=None, help="default: the spec's")
    p.add_argument("--val", type=float, default=None, help="validation share (train share shrinks by the same)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "seed_spread.jsonl")
    p.add_argument("--summary", type=Path, default=None)
    return p.parse_args()


def study_level(args: argparse.Namespace):
    spec = load_spec(args.spec)
    data = spec.data.model_copy(update={k: v for k, v in {"n_images": args.n_images, "placement": args.placement}.items()
                                        if v is not None})
    if args.val is not None:
        split = spec.data.split.model_copy(update={"train": spec.data.split.train - (args.val - spec.data.split.val),
                                                   "val": args.val})
        data = data.model_copy(update={"split": split})
    factors = {**spec.factors, "alpha": [args.level]}
    raw = spec.model_copy(update={"data": data, "factors": factors, "evaluation": spec.evaluation.model_copy(update={"shift": {}})})
    return raw, build_study_data(raw)[(args.level,)]


def train_one(args: argparse.Namespace, spec, level, arm: str, seed: int) -> dict:
    torch.set_num_threads(1)
    init_seed = 0 if args.vary == "order" else seed
    order_seed = 0 if args.vary == "init" else seed
    torch.manual_seed(init_seed)
    arch = resolve_architecture(arm, family_overrides=spec.model, custom=spec.architectures)
    image = level.train.volume(0)[0]
    model = build_network(arch, spatial_dims=image.ndim - 1, in_channels=image.shape[0], out_channels=1,
                          img_size=list(image.shape[1:]))
    # The memory layout a trial trains in (channels-last for the U-Net family on a CPU), so the
    # floats follow the study's kernels.
    model = model.to(memory_format=memory_format(arch, spatial_dims=image.ndim - 1, device=torch.device("cpu")))
    extra = {k: v for k, v in {"optimizer": args.optimizer, "weight_decay": args.weight_decay}.items() if v is not None}
    hp = Hyperparameters.model_validate({**spec.fixed_hyperparameters.model_dump(), "lr": args.lr, "batch_size": args.batch, **extra})
    optimizer = build_optimizer(model, hp)
    epochs = args.epochs or spec.training.epochs
    inputs = WholeImages(batch_size=args.batch)
    update: dict = {"epochs": epochs}
    if args.schedule is not None:
        update["schedule"] = args.schedule
    if args.warmup is not None:
        update["warmup_epochs"] = args.warmup
    if args.clip is not None:
        update["grad_clip"] = args.clip or None
    training = spec.training.model_copy(update=update)  # the study's recipe unless a flag changes it
    schedule = build_schedule(optimizer, training, inputs.steps(level.train))
    loss_fn = build_loss(spec.training.model_copy(update={"loss": args.loss}) if args.loss else spec.training)
    rng = np.random.default_rng([order_seed, 7919])
    averaged = averaging(model, args)
    swa_from = int(args.swa_start * epochs) if args.swa_start else None
    thr = spec.evaluation.threshold
    rows = {"val": [], "test": [], "avg_val": [], "avg_test": []}
    device = torch.device("cpu")
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in inputs.batches(level.train, rng):
            x, y = augment(np.asarray(x), np.asarray(y), rng, args)
            x, y = torch.tensor(x), torch.tensor(y, dtype=torch.float32)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            if training.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            if averaged is not None and (swa_from is None):
                averaged.update_parameters(model)
        if averaged is not None and swa_from is not None and epoch > swa_from:
            averaged.update_parameters(model)
        for name, split in (("val", level.val), ("test", level.test)):
            rows[name].append(float(np.mean(dice_per_image(inputs.predict(model, split, device=device), split, threshold=thr))))
        if averaged is not None and (swa_from is None or epoch > swa_from):
            if swa_from is not None:
                scored = copy.deepcopy(averaged)
                torch.optim.swa_utils.update_bn(_loader(level.train, args.batch), scored)
                net = scored.module
            else:
                net = averaged.module
            for name, split in (("avg_val", level.val), ("avg_test", level.test)):
                rows[name].append(float(np.mean(dice_per_image(inputs.predict(net, split, device=device), split, threshold=thr))))
    return {"arm": arm, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), **rows}


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and translations, the same for an image and its mask (none unless asked)."""
    if not (args.flips or args.shifts):
        return x, y
    x, y = x.copy(), y.copy()
    for i in range(len(x)):
        if args.flips:
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    x[i], y[i] = np.flip(x[i], axis), np.flip(y[i], axis)
        if args.shifts:
            dy, dx = rng.integers(-args.shifts, args.shifts + 1, size=2)
            x[i], y[i] = np.roll(x[i], (dy, dx), axis=(-2, -1)), np.roll(y[i], (dy, dx), axis=(-2, -1))
    return x, y


def averaging(model, args):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    if args.ema:
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    if args.swa_start:
        return AveragedModel(model)
    return None


def _loader(split, batch: int):
    for start in range(0, len(split), batch):
        yield torch.tensor(np.stack([split.volume(i)[0] for i in range(start, min(start + batch, len(split)))]))


def summarise(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["variant"], r["arm"]), []).append(r)
    print(f"{'variant':<28}{'arm':<16}{'n':>3} {'best-val':>15} {'last':>15} {'last5':>15} {'oracle':>15} {'avg-best':>15} {'avg-last':>15}")
    for (variant, arm), runs in sorted(by.items()):
        def stat(values: list[float]) -> str:
            v = np.asarray(values, dtype=float)
            return f"{v.mean():.3f}+-{v.std(ddof=1):.3f}" if len(v) > 1 and np.isfinite(v).all() else "-"
        best = [r["test"][int(np.argmax(r["val"]))] for r in runs]
        last = [r["test"][-1] for r in runs]
        last_k = [float(np.mean(r["test"][-LAST_K:])) for r in runs]
        oracle = [max(r["test"]) for r in runs]
        avg_best = [r["avg_test"][int(np.argmax(r["avg_val"]))] if r["avg_test"] else float("nan") for r in runs]
        avg_last = [r["avg_test"][-1] if r["avg_test"] else float("nan") for r in runs]
        print(f"{variant:<28}{arm:<16}{len(runs):>3} {stat(best):>15} {stat(last):>15} {stat(last_k):>15} "
              f"{stat(oracle):>15} {stat(avg_best):>15} {stat(avg_last):>15}")


def main() -> None:
    args = parse()
    if args.summary:
        summarise(args.summary)
        return
    spec, level = study_level(args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "summary")}
    with args.out.open("a") as f:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for arm in args.arms.split(","):
                result = train_one(args, spec, level, arm, seed)
                f.write(json.dumps({**settings, **result, "machine": machine()}) + "\n")
                f.flush()
                print(f"{args.variant} {arm} seed {seed}: best-val test {result['test'][int(np.argmax(result['val']))]:.3f}, "
                      f"last {result['test'][-1]:.3f} ({result['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
