"""`pyspec train dflash`: the command line of pyspec.train (imports PyTorch only when run)."""
from __future__ import annotations

import json

from ..errors import PyspecError


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a drafter for a GGUF target (needs pyspec[train]: PyTorch)")
    ts = t.add_subparsers(dest="train_kind")
    d = ts.add_parser(
        "dflash", help="train a DFlash block-diffusion drafter by self-distillation",
        description="Trains a DFlash drafter for TARGET: the target answers prompts built from the Python "
                    "standard library (offline), its layer inputs are the drafter's features, and the result is "
                    "a GGUF for llama.cpp's dflash architecture (pyspec -md OUT --spec-type dflash, or "
                    "llama.cpp's --spec-type draft-dflash). Prints tau (mean acceptance length) on held-out "
                    "prompts at the end; OUT.json holds the report and the training curve.")
    d.add_argument("--target", "-m", required=True, help="the target GGUF")
    d.add_argument("--out", "-o", required=True, help="the drafter GGUF to write")
    d.add_argument("--layers", type=int, default=None, help="drafter layers (default: about a sixth of the "
                   "target's, 1..5)")
    d.add_argument("--n-ff", type=int, default=None, help="drafter FFN width (default: the target's)")
    d.add_argument("--block-size", type=int, default=16, help="block size: drafts up to BLOCK-1 tokens (default: "
                   "%(default)s)")
    d.add_argument("--target-layers", default=None,
                   help="comma-separated layer-input ids of the target to read (default: 5 spread over it)")
    d.add_argument("--steps", type=int, default=2000, help="optimizer steps (default: %(default)s)")
    d.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: %(default)s)")
    d.add_argument("--anchors", type=int, default=32, help="blocks per sequence per step (default: %(default)s)")
    d.add_argument("--lr", type=float, default=6e-4, help="AdamW learning rate (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--prompts", type=int, default=2000, help="training prompts at most (default: %(default)s)")
    d.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts (default: %(default)s)")
    d.add_argument("--max-tokens", type=int, default=256, help="response tokens per prompt (default: %(default)s)")
    d.add_argument("--token-budget", type=int, default=None, help="stop generating data after this many tokens")
    d.add_argument("--data-time", type=float, default=None, help="stop generating data after this many seconds")
    d.add_argument("--train-time", type=float, default=None, help="stop training after this many seconds")
    d.add_argument("--dtype", choices=("f32", "f16", "q8_0"), default="f16",
                   help="weight type of the written GGUF (default: %(default)s)")
    d.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                   help="target layers on the GPU while generating data (-1: all)")
    d.add_argument("-np", "--parallel", type=int, default=0,
                   help="responses generated at once while making data (default: 32 with -ngl, else 4)")
    d.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    d.add_argument("--mask-token", type=int, default=None,
                   help="mask token id (default: the target's mask token, <mask>, or <unk>)")
    d.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (OUT.ckpt)")
    d.add_argument("--resume", action="store_true", help="continue from OUT.ckpt (its data and step)")
    d.add_argument("--more-data", action="store_true",
                   help="add responses to OUT.data.npz first: the next unused training prompts, for --data-time / "
                        "--token-budget more (with --resume, training then continues on all of it)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.set_defaults(func=cmd_train_dflash)
    t.set_defaults(func=lambda a: (t.print_help(), 2)[1])


def cmd_train_dflash(args) -> int:
    try:
        from . import TrainOptions, train_dflash
    except ImportError as e:
        raise PyspecError(str(e)) from None
    try:
        layers = [int(x) for x in args.target_layers.split(",")] if args.target_layers else None
    except ValueError:
        raise PyspecError(f"--target-layers takes comma-separated integers, got {args.target_layers!r}") from None
    o = TrainOptions(layers=args.layers, n_ff=args.n_ff, block_size=args.block_size, target_layers=layers, steps=args.steps,
                     batch_size=args.batch_size, anchors=args.anchors, lr=args.lr, seed=args.seed,
                     prompts=args.prompts, eval_prompts=args.eval_prompts, max_tokens=args.max_tokens,
                     token_budget=args.token_budget, data_time=args.data_time, train_time=args.train_time,
                     dtype=args.dtype, n_gpu_layers=args.n_gpu_layers, parallel=args.parallel, device=args.device,
                     mask_token_id=args.mask_token, checkpoint_every=args.checkpoint_every, resume=args.resume,
                     more_data=args.more_data,
                     progress=not args.no_progress)
    r = train_dflash(args.target, args.out, o, log=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(r.to_dict()))
    return 0
