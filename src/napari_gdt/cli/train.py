"""``napari-gdt train``: train a generator on paired (image, expression canvas) data."""

from __future__ import annotations

import sys


def register(sub):
    p = sub.add_parser(
        "train",
        help="train a generator on registered images and expression canvases",
        description=(
            "Train a padding-free generator (gdt-v1, or gdt-v2 with --arch) on paired patches (expression window + image tile). "
            "Give --image/--expression once per section (paired by order). Checkpoints go to --ckpt-dir "
            "(default OUT.ckpt/); --resume CKPT continues a run (the step counter goes on; --steps is the total)."
        ),
    )
    p.add_argument("--image", action="append", required=True, metavar="IMG", help="registered real image (repeat per section)")
    p.add_argument(
        "--expression",
        action="append",
        required=True,
        metavar="CANVAS",
        help="expression canvas .ome.zarr (repeat, same order as --image)",
    )
    p.add_argument("--out", required=True, metavar="MODEL", help="output bundle (.safetensors); rewritten at every checkpoint")
    p.add_argument(
        "--val-region",
        metavar="Y0:Y1,X0:X1",
        help="held-out region (output px) of the first section: excluded from training, used for validation",
    )
    p.add_argument("--val-image", action="append", metavar="IMG", help="held-out validation image (repeat per section)")
    p.add_argument(
        "--val-expression", action="append", metavar="CANVAS", help="held-out validation canvas (same order as --val-image)"
    )
    p.add_argument("--steps", type=int, default=2000, help="total training steps (default 2000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out even if napari-gdt did not write it")
    p.add_argument("--resume", metavar="CKPT", help="continue from this checkpoint (e.g. OUT.ckpt/last.pt)")
    p.add_argument(
        "--init-from",
        metavar="MODEL|CKPT",
        help="fine-tune: start from this gdt-v1 or gdt-v2 model (bundle or bundled name such as her2st-he; or a "
        "training checkpoint, which also brings the discriminator). "
        "Genes are matched by name; genes new to the panel start at zero weight. Its architecture is used, with "
        "--arch-config's changes on top",
    )
    p.add_argument(
        "--train-only-new-genes",
        action="store_true",
        help="with --init-from: keep every generator weight of the starting model and learn only the input weights of the "
        "genes it lacks (the discriminator trains as usual)",
    )
    p.add_argument(
        "--arch",
        default=None,
        choices=["gdt-v1", "gdt-v2"],
        help="generator architecture of a new run (default gdt-v1; a resumed run keeps its own, --init-from takes its model's)",
    )
    p.add_argument("--d-scales", type=int, default=1, help="discriminators at 1, 1/2, ... resolution (default 1)")
    p.add_argument("--d-ch", type=int, default=32, help="discriminator width: channels of its first layer (default 32)")
    p.add_argument("--r1-gamma", type=float, default=0.0, help="R1 penalty on real images (default 0 = off)")
    p.add_argument(
        "--depth-aug",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of thinning a window's counts to a random depth in [1/20, 1] (default 0)",
    )
    p.add_argument(
        "--depth-unit",
        default="bin",
        choices=["bin", "spot"],
        help="--depth-aug thins each bin (default) or, for spot canvases, each spot as sequencing does",
    )
    p.add_argument(
        "--keep-every",
        type=int,
        default=0,
        metavar="N",
        help="keep the bundle of every Nth step as CKPT_DIR/stepN.safetensors, to choose among them later (default 0 = no)",
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")
    p.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="mixed precision of the training step (default auto: bf16 autocast on a CUDA GPU that supports it, else fp32)",
    )
    p.add_argument(
        "--genes", metavar="FILE|G1,G2", help="gene panel (default: the genes shared by all canvases, in the first canvas' order)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="patches per step (default 4)")
    p.add_argument(
        "--patch-bins",
        type=int,
        default=None,
        help="input window edge in bins (default 10, or the starting model's with --init-from; raised to the smallest "
        "window the model's halo and the pooled losses fit in)",
    )
    p.add_argument(
        "--arch-config",
        metavar="JSON",
        help='generator config overrides, e.g. \'{"emb_ch": 64, "stage_channels": [64, 48, 32, 16]}\'',
    )
    p.add_argument("--ckpt-dir", metavar="DIR", help="checkpoint folder (default OUT.ckpt)")
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints (default 200)")
    p.add_argument("--log", metavar="FILE", help="append JSON lines of losses here (default CKPT_DIR/log.jsonl)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate of both networks (default 2e-3)")
    p.add_argument("--beta1", type=float, default=0.0, help="Adam beta1 of both networks (default 0)")
    p.add_argument("--clip-grad", type=float, default=0.0, help="clip the generator's gradient norm (0 = off)")
    p.add_argument(
        "--lambda-rec", type=float, default=10.0, help="weight of the low-resolution L1 reconstruction loss (default 10)"
    )
    p.add_argument(
        "--lambda-hem", type=float, default=0.0, help="H&E: weight of an L1 on pooled haematoxylin density (default 0 = off)"
    )
    p.add_argument("--hem-pool", type=int, default=16, help="pooling (output px) of the haematoxylin loss (default 16)")
    p.add_argument(
        "--lambda-nuc",
        type=float,
        default=0.0,
        help="weight of an L1 on the local nuclear area fraction (H&E or DAPI; soft nuclear mask pooled at 32, 64 px; 0 = off)",
    )
    p.add_argument(
        "--lambda-nuc-var",
        type=float,
        default=0.0,
        help="weight of matching the spread of that local fraction over the batch (density contrast; default 0)",
    )
    p.add_argument(
        "--lambda-prior",
        type=float,
        default=0.0,
        help="gdt-v2 with prior 1: weight of an L1 between the local nuclear area fraction and the composition "
        "prior's map, stretched to the real fraction's mean and SD (0 = off)",
    )
    p.add_argument(
        "--lambda-orient",
        type=float,
        default=0.0,
        help="weight of an L1 on pooled structure-tensor coherence and edge energy (fibres, any direction; 0 = off)",
    )
    p.add_argument(
        "--lambda-dist",
        type=float,
        default=0.0,
        help="weight of the W1 between each window's generated and real intensity distributions (pixels and 8-px means; 0 = off)",
    )
    p.add_argument(
        "--lambda-depth",
        type=float,
        default=0.0,
        help="weight of the L1 between the local nuclear area fractions (32, 64 px) of a window rendered from its "
        "thinned counts and from its counts as measured (same seed and latent; needs --depth-aug; 0 = off)",
    )
    p.add_argument(
        "--lambda-spec",
        type=float,
        default=0.0,
        help="weight of the squared difference between the generated windows' log power spectrum of standardised "
        "luminance and a running mean of the real windows', per octave band from one cycle per window to the pixel "
        "(texture at every scale; 0 = off)",
    )
    p.add_argument(
        "--lambda-tex",
        type=float,
        default=0.0,
        help="weight of the relative squared difference between the generated windows' Gram matrices of a fixed "
        "random network's features of standardised luminance and a running mean of the real windows' (which shapes "
        "make the texture, from pixel grain to about 80 px; 0 = off)",
    )
    p.add_argument(
        "--lambda-gran",
        type=float,
        default=0.0,
        help="weight of the squared log ratio between the generated windows' pattern spectrum of the soft nuclear mask "
        "(what survives openings by 2-12 px squares: how wide the stained structures are) and a running mean of the "
        "real windows' (holds the nuclei's size; 0 = off)",
    )
    p.add_argument(
        "--lambda-seed",
        type=float,
        default=0.0,
        help="weight of the L1 between two seeds' local nuclear area fractions (64 and 128 px): cellularity "
        "follows the expression, not the seed (H&E or DAPI; 0 = off; costs a second generator pass)",
    )
    p.add_argument("--rec-pool", type=int, default=8, help="pooling (output px) of the reconstruction loss (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--time-limit", type=float, default=0.0, metavar="MIN", help="stop and checkpoint after MIN minutes (0 = none)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--name", default=None, help="model name recorded in the card (default: OUT's stem)")
    p.add_argument("--tile-px", type=int, default=256, help="default render tile of the bundle (default 256)")
    p.add_argument("--channels", default=None, help="output channel names, comma separated (default R,G,B or DAPI)")
    p.add_argument("--no-eval", action="store_true", help="skip the final nuclear-morphometry evaluation")
    p.set_defaults(func=run)


def run(args):
    from ..training.run import train_from_args

    argv = list(sys.argv)
    if "train" not in argv[1:3]:  # called as a function (tests, scripts): rebuild the command from the options
        argv = [argv[0], "train"] + _options(args)
    return train_from_args(args, argv=argv)


def _options(args) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k in ("func", "command", "debug") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif isinstance(v, list):
            for x in v:
                out += [flag, str(x)]
        else:
            out += [flag, str(v)]
    return out
