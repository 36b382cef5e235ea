"""Command line: fit a law to any CSV, per group, and write tables (and plots).

    python -m fits --csv results.csv --law log_law --x D_p --y bleu --by mixture,D_f \
        --holdout smallest:4 --bootstrap 1000 --out DIR

--holdout: smallest:k (fit the k smallest points of each group), largest:k (hold out the k
largest) or column:NAME (hold out the rows where column NAME is 1 / True).

--x names one column, or several comma-separated for a multivariate law (in the law's input
order).  --bounds b=:1,alpha=0:2 bounds parameters (an empty side is open); --bootstrap-groups
COLUMN resamples the rows of each value of COLUMN together (e.g. the checkpoints of one run).
Writes DIR/fits.csv, DIR/fits.md, DIR/fits.tex and, with --plot, DIR/fits.png.
"""
from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fits", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--law", required=True)
    ap.add_argument("--x", required=True, help="input column(s), comma-separated")
    ap.add_argument("--y", required=True)
    ap.add_argument("--by", default="", help="group columns, comma-separated")
    ap.add_argument("--holdout", default=None, help="smallest:k, largest:k or column:NAME")
    ap.add_argument("--loss", default=None, choices=["huber", "lsq"])
    ap.add_argument("--delta", type=float, default=None)
    ap.add_argument("--starts", default="grid", help="'grid' or a number of random starts")
    ap.add_argument("--bootstrap", type=int, default=0)
    ap.add_argument("--bootstrap-groups", default=None,
                    help="column whose values are resampled whole (a block bootstrap)")
    ap.add_argument("--bounds", default="", help="e.g. b=:1,alpha=0:2 (an empty side is open)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", action="store_true")
    return ap


def main(argv=None) -> int:
    import pandas as pd

    from fits import core, laws, tables

    args = _parser().parse_args(argv)
    df = pd.read_csv(args.csv)
    x_cols = [c for c in args.x.split(",") if c]
    by = [c for c in args.by.split(",") if c]
    holdout_col = _holdout_column(args.holdout)
    groups_col = args.bootstrap_groups
    missing = [c for c in x_cols + [args.y] + by + [holdout_col, groups_col]
               if c and c not in df.columns]
    if missing:
        raise ValueError(f"--csv {args.csv!r} lacks columns {missing} (has {list(df.columns)})")
    if holdout_col and not df[holdout_col].isin([0, 1]).all():
        raise ValueError(f"--holdout column:{holdout_col}: the column must hold 0/1 or True/False")
    law = laws.get(args.law) if args.law != "fernandes_joint" else None
    if law is not None and len(x_cols) != law.n_inputs:
        raise ValueError(f"--x names {len(x_cols)} columns; law {args.law!r} takes "
                         f"{law.n_inputs} ({list(law.input_names)})")
    starts = int(args.starts) if args.starts.isdigit() else args.starts
    bounds = _bounds(args.bounds)
    names = law.input_names if law is not None else ("N", "p")
    groups = df.groupby(by, sort=True) if by else [((), df)]
    results = {}
    for key, sub in groups:
        x = {n: sub[c].to_numpy() for n, c in zip(names, x_cols)}
        x = x[names[0]] if len(names) == 1 else x
        results[key if isinstance(key, tuple) else (key,)] = core.fit(
            args.law, x, sub[args.y].to_numpy(),
            holdout=sub[holdout_col].to_numpy().astype(bool) if holdout_col else args.holdout,
            loss=args.loss, delta=args.delta, starts=starts, bounds=bounds,
            bootstrap=args.bootstrap, seed=args.seed,
            bootstrap_groups=sub[groups_col].to_numpy() if groups_col else None)
    os.makedirs(args.out, exist_ok=True)
    frame = tables.to_frame(results, key_names=by or None) if by else tables.to_frame(
        list(results.values()))
    tables.to_csv(frame, os.path.join(args.out, "fits.csv"))
    with open(os.path.join(args.out, "fits.md"), "w", encoding="utf-8") as fh:
        fh.write(tables.to_markdown(frame))
    with open(os.path.join(args.out, "fits.tex"), "w", encoding="utf-8") as fh:
        fh.write(tables.to_latex(frame))
    if args.plot:
        _plot(results, groups, x_cols, names, args)
    print(tables.to_markdown(frame))
    return 0


def _bounds(spec: str) -> dict[str, tuple[float | None, float | None]]:
    """--bounds b=:1,alpha=0:2 as {"b": (None, 1.0), "alpha": (0.0, 2.0)}."""
    out = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, eq, limits = item.partition("=")
        lower, colon, upper = limits.partition(":")
        if not eq or not colon:
            raise ValueError(f"--bounds {item!r}: expected NAME=LOWER:UPPER (a side may be empty)")
        try:
            out[name.strip()] = tuple(float(v) if v.strip() else None for v in (lower, upper))
        except ValueError:
            raise ValueError(f"--bounds {item!r}: LOWER and UPPER must be numbers") from None
    return out


def _holdout_column(spec: str | None) -> str | None:
    """The column named by --holdout column:NAME, else None."""
    prefix = "column:"
    return spec[len(prefix):] if spec and spec.startswith(prefix) else None


def _plot(results, groups, x_cols, names, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fits import plots

    fig, ax = plt.subplots(figsize=(6, 4))
    for (key, sub), res in zip(groups, results.values()):
        x = {n: sub[c].to_numpy() for n, c in zip(names, x_cols)}
        x = x[names[0]] if len(names) == 1 else x
        plots.plot_fit(ax, x, sub[args.y].to_numpy(), res, label=str(key))
    ax.set_xlabel(x_cols[0])
    ax.set_ylabel(args.y)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fits.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:  # bad input: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
