"""Training command line: ``python -m models.train generator --data DIR --out DIR [...]``.

Kept apart from the service's ``rapport`` command so the serving code never imports training
code (ARCHITECTURE.md §8). Parses arguments into the recipe's config and calls the recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from models.train.generator import TrainGeneratorConfig, train_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    sub = parser.add_subparsers(dest="recipe", required=True)
    gen = sub.add_parser("generator", help="the generic reaction generator (diffusion denoiser)")
    gen.add_argument("--data", required=True, help="a REACT-layout tree (e.g. the synthetic world)")
    gen.add_argument("--out", required=True, help="run folder (resumes when it holds one)")
    gen.add_argument("--config", default="default", choices=("default", "tiny"))
    gen.add_argument("--steps", type=int, default=20_000)
    gen.add_argument("--batch-size", type=int, default=64)
    gen.add_argument("--lr", type=float, default=3e-4)
    gen.add_argument("--warmup", type=int, default=500)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    gen.add_argument("--checkpoint-every", type=int, default=1000)
    gen.add_argument("--feature-cache", help="folder caching the audio features")
    gen.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    cfg = TrainGeneratorConfig(
        data_root=args.data, out_dir=args.out, generator=args.config, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=args.seed,
        device=args.device, checkpoint_every=args.checkpoint_every,
        feature_cache=args.feature_cache,
    )  # fmt: skip
    try:
        summary = train_generator(cfg, progress=not args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        logging.getLogger("models.train").error("%s", err)
        return 2
    sys.stdout.write(json.dumps({k: summary[k] for k in ("steps", "final_loss_ema", "seconds",
                                                          "device", "seed")}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
