"""Change a checkpoint's input options or loss settings between two stages of a training run.

A staged recipe (train, then continue with a wider context or coarser losses) keeps every weight
and the optimiser state, and changes only options that leave every tensor's shape as it was::

    python -m napari_gdt.training.rearch runs/a/her2st-he.ckpt/last.pt runs/b/her2st-he.ckpt/last.pt \\
        --arch '{"depth_window": 1}' --cfg '{"rec_pool": 64, "hem_pool": 64}'

then ``napari-gdt train ... --resume runs/b/her2st-he.ckpt/last.pt``. The change is checked by
building the generator with the new options and loading the checkpoint's weights into it (a change
that needs other shapes is refused with the first mismatch; the exceptions are turning on
``gdt-v2``'s ``abs_depth``, whose new input starts at zero weight, with ``--expression`` canvases to
fit its depth scale, and its ``prior`` (``{"prior": 1}``), whose input starts at zero weight and is
fitted by the training run that resumes the stage), and it is appended to the run's
``commands.json`` (copied next to the new checkpoint), so the bundle's card lists every stage.
The source checkpoint is never modified; an existing output is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..errors import GDTError
from .loop import EXTRA_LOSS_KEYS

#: loss and sampling settings a stage may change (the rest stay the run's)
CFG_KEYS = (
    "patch_bins",
    "batch_size",
    "lr_g",
    "lr_d",
    "lambda_rec",
    "lambda_adv",
    "rec_pool",
    *EXTRA_LOSS_KEYS,
    "r1_gamma",
    "depth_aug",
    "depth_min",
    "ema",
    "prior_boost",
)


def _json_arg(text: str, what: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise GDTError(f"{what} is not valid JSON ({e})") from None
    if not isinstance(v, dict):
        raise GDTError(f"{what} must be a JSON object")
    return v


def _add_abs_depth(st: dict, g, expression) -> None:
    """Turn on ``gdt-v2``'s absolute-depth input in checkpoint ``st`` (in place): the new input
    column of the embedding starts at zero in both generators and in Adam's moments (the stage
    starts as the old model, blind to depth), and ``depth_scale`` is fitted on ``expression``."""
    import numpy as np

    from ..expression.canvas import ExpressionCanvas

    if not expression:
        raise GDTError("--arch turns abs_depth on: give the training canvases with --expression (to fit its depth scale)")
    col = g.n_genes + 2  # composition, coverage, relative depth, then the new channel
    counts = []
    for path in expression:
        try:
            c = ExpressionCanvas.from_ome_zarr(path)
        except Exception as e:  # noqa: BLE001 - one line names the canvas
            raise GDTError(f"{path}: cannot read the expression canvas ({e})") from None
        counts.append(np.asarray(c.data, np.float32))
    g.fit_input_scale(counts)
    _widen_embed(st, g, col, 1)
    for key in ("G", "G_ema"):
        st[key]["depth_scale"] = g.depth_scale.detach().clone()


def _add_prior(st: dict, g) -> None:
    """Turn on ``gdt-v2``'s composition prior in checkpoint ``st`` (in place): its input columns
    start at zero weight (the stage starts as the old model) and its read-out unfitted; the
    training run fits it on its sections before the first step."""
    _widen_embed(st, g, g.prior_column, g.n_prior)
    for key in ("G", "G_ema"):
        for name in ("prior_w", "prior_b", "prior_fitted"):
            st[key][name] = getattr(g, name).detach().clone()


def _widen_embed(st: dict, g, col: int, n: int) -> None:
    """Insert ``n`` zero input columns at ``col`` into the embedding of both generators and of Adam's moments."""
    import torch

    names = [name for name, _ in g.named_parameters()]
    idx = names.index("embed.weight")

    def widen(w):
        return torch.cat([w[:, :col], torch.zeros_like(w[:, :n]), w[:, col:]], dim=1)

    for key in ("G", "G_ema"):
        st[key]["embed.weight"] = widen(st[key]["embed.weight"])
    state = st.get("opt_g", {}).get("state", {})
    if idx in state:
        for m in ("exp_avg", "exp_avg_sq"):
            if m in state[idx]:
                state[idx][m] = widen(state[idx][m])


def rearch(
    src, dst, arch: dict | None = None, cfg: dict | None = None, argv: list[str] | None = None, expression=None, refit_prior=False
) -> dict:
    """Write checkpoint ``dst``: ``src`` with ``arch`` / ``cfg`` entries replaced. Returns the new arch and cfg.

    Weight shapes must stay, except that ``gdt-v2``'s ``abs_depth`` may be turned on (its new input
    starts at zero weight; ``expression``: the training canvases, to fit its depth scale).
    ``refit_prior``: mark the composition prior's read-out unfitted, so that the run resuming
    ``dst`` fits it again (with today's :func:`napari_gdt.training.prior.fit_prior`, e.g. per spot);
    the weights that read the prior channel are kept.
    """
    import torch

    from ..models.registry import ARCHITECTURES, _load_builtin
    from .loop import read_checkpoint

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise GDTError(f"{dst}: exists; refusing to overwrite (choose a new checkpoint folder)")
    if dst.resolve().parent == src.resolve().parent:
        raise GDTError(f"{dst}: write the new stage into its own checkpoint folder (not {src.parent})")
    st = read_checkpoint(src, ("arch", "cfg", "G", "G_ema", "genes", "step"))
    arch, cfg = dict(arch or {}), dict(cfg or {})
    bad = sorted(set(cfg) - set(CFG_KEYS))
    if bad:
        raise GDTError(f"--cfg: {bad[0]!r} cannot change between stages (allowed: {', '.join(CFG_KEYS)})")
    model = st.get("model_arch", "gdt-v1")
    new_arch = {**st["arch"], **arch}
    _load_builtin()
    try:
        g = ARCHITECTURES[model](**new_arch)
    except (TypeError, ValueError) as e:
        raise GDTError(f"--arch does not fit {model}: {e}") from None
    if new_arch.get("abs_depth") and not st["arch"].get("abs_depth"):
        _add_abs_depth(st, g, expression)
    elif expression:
        raise GDTError("--expression is only needed when --arch turns abs_depth on (to fit its depth scale)")
    if new_arch.get("prior") and not st["arch"].get("prior"):
        if new_arch["prior"] != 1:
            raise GDTError("--arch prior: 1 (one channel, the local nuclear area fraction) is the prior there is")
        _add_prior(st, g)
    elif st["arch"].get("prior") and not new_arch.get("prior"):
        raise GDTError("--arch cannot turn the prior off (its input columns hold trained weights)")
    if refit_prior:
        if not new_arch.get("prior"):
            raise GDTError("--refit-prior: this generator has no composition prior (gdt-v2 with prior 1)")
        for key in ("G", "G_ema"):
            st[key]["prior_fitted"] = torch.zeros_like(st[key]["prior_fitted"])
    try:
        g.load_state_dict(st["G"])
    except RuntimeError as e:
        raise GDTError(f"--arch changes a weight's shape ({str(e).splitlines()[1].strip()})") from None
    run_cfg = json.loads(st["cfg"])
    run_cfg.update(cfg)
    # the optimisers' saved state holds their learning rates: a new rate must be written there too
    for key, opt in (("lr_g", "opt_g"), ("lr_d", "opt_d")):
        if key in cfg and opt in st:
            for group in st[opt]["param_groups"]:
                group["lr"] = float(cfg[key])
    run_cfg["arch"] = {k: v for k, v in new_arch.items() if k not in ("n_genes", "out_channels")}
    st["arch"] = new_arch
    st["cfg"] = json.dumps(run_cfg)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(st, dst)
    commands = []
    meta = src.with_name("commands.json")
    if meta.exists():
        commands = json.loads(meta.read_text())
    cmd = "python -m napari_gdt.training.rearch " + " ".join(shlex.quote(a) for a in (argv or [str(src), str(dst)]))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    commands.append({"command": cmd, "started_utc": now, "from_step": int(st["step"])})
    dst.with_name("commands.json").write_text(json.dumps(commands, indent=1))
    return {"arch": new_arch, "cfg": run_cfg, "step": int(st["step"])}


def main(argv=None) -> int:
    """Command line: ``python -m napari_gdt.training.rearch SRC DST [--arch JSON] [--cfg JSON]``; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m napari_gdt.training.rearch", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the run's checkpoint (last.pt)")
    ap.add_argument("dst", help="the new stage's checkpoint (in a new folder)")
    ap.add_argument("--arch", default="{}", help="JSON: architecture options to replace (same weight shapes)")
    ap.add_argument(
        "--expression", action="append", default=[], help="training canvas (repeat); only when --arch turns abs_depth on"
    )
    ap.add_argument("--cfg", default="{}", help=f"JSON: training settings to replace ({', '.join(CFG_KEYS)})")
    ap.add_argument(
        "--refit-prior",
        action="store_true",
        help="fit the composition prior's read-out again when the run resumes (weights kept)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    a = ap.parse_args(argv)
    try:
        r = rearch(
            a.src,
            a.dst,
            _json_arg(a.arch, "--arch"),
            _json_arg(a.cfg, "--cfg"),
            argv=argv,
            expression=a.expression,
            refit_prior=a.refit_prior,
        )
    except GDTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.dst} (step {r['step']}); resume it with napari-gdt train ... --resume {a.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
