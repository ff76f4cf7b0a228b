"""`vividhead train`: FlashHead training from the shards of `vividhead build`.

`stage: 1` configs run flow-matching pre-training (`vividhead.training.stage1`); `stage: 2` configs
run DMD distillation (`vividhead.training.stage2.run`). Re-running a command over the same `out`
folder resumes from its newest checkpoint. For many GPUs, launch the same command under torchrun:
`torchrun --nproc_per_node 8 -m vividhead.cli train --config manifests/train-lite.yaml`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vividhead.storage import is_object_url

HELP = "train FlashHead on built shards (stage 1 flow matching, stage 2 DMD distillation)"
# The trainers report bad shards, weights and settings (each naming the file or field) as these.
INPUT_ERRORS = (FileNotFoundError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="training config YAML (manifests/train-*.yaml)")
    parser.add_argument("--shards", nargs="+", metavar="PATH",
                        help="override data.shards: shard files, folders (e.g. a build's output) or globs")
    parser.add_argument("--out", type=Path, help="override out: the run folder (checkpoints, loss.jsonl)")
    parser.add_argument("--steps", type=int, help="override steps")
    parser.add_argument("--init", type=Path, help="override model.init: start from released weights (a release folder or a run folder); "
                             "the config's model.overrides are then ignored")
    parser.add_argument("--workers", type=int, help="override data.num_workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI values as dotted config keys; CLI paths are relative to the working directory."""
    values: dict[str, Any] = {}
    if args.shards:
        values["data.shards"] = [s if is_object_url(s) else str(Path.cwd() / Path(s).expanduser())   # globs kept
                                 for s in args.shards]
    if args.out is not None:
        values["out"] = args.out.expanduser().resolve()
    if args.steps is not None:
        values["steps"] = args.steps
    if args.init is not None:   # the released weights fix the shape: the config's shape overrides do not apply
        values["model.init"] = args.init.expanduser().resolve()
        values["model.overrides"] = {}
    if args.workers is not None:
        values["data.num_workers"] = args.workers
    return values


def run(args: argparse.Namespace) -> int:
    from vividhead.envfail import check_out_dir
    from vividhead.training.config import load_train_config

    config = load_train_config(args.config, overrides(args))
    check_out_dir(config.out)
    if config.stage == 2:
        from vividhead.training import stage2

        return int(stage2.run(config) or 0)
    from vividhead.training import stage1

    return stage1.run(config, progress=not args.no_progress)
