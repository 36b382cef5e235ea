"""The study's fitted laws, as tables and plots written into the workdir.

The config lists the curves to fit (`cfg.fits.curves`): each names a law from
`fits.laws`, the columns it takes (positionally onto the law's input names, so
chinchilla's (N, D) <- ("N", "D_p")), the target column, the columns that split
the rows into separate fits, the held-out protocol (Isik et al.: fit the 4
smallest D_p, predict the rest) and the Huber delta.

    fits.md, fits.tex, fits.csv   one row per fitted group: parameters with
                                  bootstrap intervals, in-sample and held-out error;
                                  with a log-law curve, an `isik_rule` column: Isik et
                                  al.'s verdict on each BLEU log-law against the CE
                                  curve of its group (fits.isik), empty on other rows
    fits_derived.csv              what the fitted laws imply: Ghorbani's optimal
                                  encoder share, Fernandes' f(p), Chinchilla's N*(C), D*(C)
    plots/                        the figure kinds `cfg.report.plots` names

Every file goes through etils.epath, so a gs:// workdir works.
"""
from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from etils import epath

import fits
from fits import isik
from scaling import results
from scaling.config import ConfigError

CURVE_FIELDS = ("law", "inputs", "target", "group_by", "holdout", "delta", "where",
                "bootstrap_groups")
REQUIRED_CURVE_FIELDS = ("law", "inputs", "target")
# Plot kind -> the law a curve must have for that figure (None: any curve will do).
PLOT_LAWS = {"curves": None, "ghorbani": "ghorbani", "fernandes": "fernandes_joint",
             "ladder": "chinchilla"}
AXIS_LABELS = {
    "bleu": "BLEU", "chrf": "chrF", "ce": "downstream cross-entropy", "loss": "loss",
    "bits_per_token": "bits per token", "D_p": "pretraining tokens D_p",
    "D_p_seen": "pretraining tokens seen", "D_f": "finetuning tokens D_f", "N": "parameters N",
    "N_e": "encoder parameters N_e", "N_d": "decoder parameters N_d",
    "N_nonembed": "non-embedding parameters", "p": "pair weight p",
}
DPI = 120


@dataclasses.dataclass(frozen=True)
class Curve:
  """One configured curve family: `law` fitted to `target` against `inputs`, per group."""
  name: str
  law: str
  inputs: tuple[str, ...]
  target: str
  group_by: tuple[str, ...] = ()
  holdout: str = "none"
  delta: float | None = None  # None: the law's own default
  where: str = ""
  bootstrap_groups: str = ""

  @property
  def field(self) -> str:
    return f"fits.curves.{self.name}"

  def law_input_names(self) -> tuple[str, ...]:
    return fits.laws.get(self.law).input_names


@dataclasses.dataclass
class Group:
  """The rows of one fit: `rows` are the successful runs, sorted by the curve's inputs."""
  values: tuple
  rows: pd.DataFrame
  left_out: dict[str, int]  # status ('diverged', 'failed') -> runs not fitted


# ------------------------------------------------------------------------------------
# The config: curves and plot kinds, checked before any compute
# ------------------------------------------------------------------------------------

def curves(cfg: ml_collections.ConfigDict) -> list[Curve]:
  """The configured curves with their defaults filled in (ConfigError on a bad shape)."""
  specs = cfg.fits.get("curves") if "fits" in cfg else None
  if not _is_mapping(specs):
    raise ConfigError("fits.curves must map curve names to dict(law=, inputs=, target=, ...)")
  return [_curve(name, spec) for name, spec in specs.items()]


def _curve(name: str, spec: Any) -> Curve:
  field = f"fits.curves.{name}"
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
    raise ConfigError(f"{field}: a curve name must be letters, digits, '_', '.' or '-' "
                      "(it names plot files)")
  if not _is_mapping(spec):
    raise ConfigError(f"{field} must be a dict(law=, inputs=, target=, ...), got {spec!r}")
  unknown = sorted(set(spec) - set(CURVE_FIELDS))
  if unknown:
    raise ConfigError(f"{field}.{unknown[0]}: unknown curve field "
                      f"(known: {', '.join(CURVE_FIELDS)})")
  missing = [f for f in REQUIRED_CURVE_FIELDS if f not in spec]
  if missing:
    raise ConfigError(f"{field}.{missing[0]} is missing "
                      f"(a curve needs {', '.join(REQUIRED_CURVE_FIELDS)})")
  given = dict(spec)
  for key in ("inputs", "group_by"):
    if key in given:
      given[key] = _column_names(f"{field}.{key}", given[key])
  for key in ("law", "target", "holdout", "where", "bootstrap_groups"):
    if key in given and not isinstance(given[key], str):
      raise ConfigError(f"{field}.{key} must be a string, got {given[key]!r}")
  return Curve(name=str(name), **given)


def _is_mapping(value: Any) -> bool:
  return isinstance(value, (Mapping, ml_collections.ConfigDict))


def _column_names(field: str, value: Any) -> tuple[str, ...]:
  names = (value,) if isinstance(value, str) else value
  if not isinstance(names, Sequence) or not all(isinstance(n, str) and n for n in names):
    raise ConfigError(f"{field} must be a tuple of column names, got {value!r}")
  return tuple(names)


def plot_kinds(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The figure kinds to draw; a config without a report section gets today's 'curves'."""
  report = cfg.get("report") or {}
  kinds = report.get("plots", ("curves",))
  return (kinds,) if isinstance(kinds, str) else tuple(kinds)


def check_curves(cfg: ml_collections.ConfigDict, produced_columns: set[str]) -> None:
  """Raises ConfigError, naming the field, for any curve or plot that cannot work.

  `produced_columns` are the results columns the study's stages fill in.
  """
  produced = set(produced_columns)
  _check_bootstrap(cfg.fits.get("bootstrap", 0))
  configured = curves(cfg)
  for curve in configured:
    _check_curve(curve, produced)
  _check_plots(plot_kinds(cfg), configured)


def _check_bootstrap(count: Any) -> None:
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
    raise ConfigError(f"fits.bootstrap must be a non-negative int (resamples per curve; "
                      f"0 = none), got {count!r}")


def _check_curve(curve: Curve, produced: set[str]) -> None:
  try:
    law = fits.laws.get(curve.law)
  except ValueError as e:
    raise ConfigError(f"{curve.field}.law: {e}") from e
  if len(curve.inputs) != law.n_inputs:
    raise ConfigError(
        f"{curve.field}.inputs has {len(curve.inputs)} column(s) {list(curve.inputs)} but law "
        f"{curve.law!r} takes {law.n_inputs}: {', '.join(law.input_names)}")
  _check_produced(curve, produced)
  both = sorted(set(curve.inputs) & set(curve.group_by))
  if both:
    raise ConfigError(f"{curve.field}.group_by holds input column {both[0]!r}: every group "
                      "would have a single value of it to fit against")
  _check_holdout(curve, produced)
  if curve.delta is not None and not _is_positive_number(curve.delta):
    raise ConfigError(f"{curve.field}.delta must be a positive number (the Huber delta), "
                      f"got {curve.delta!r}")
  _check_where(curve, produced)


def _check_produced(curve: Curve, produced: set[str]) -> None:
  named = {"inputs": curve.inputs, "target": (curve.target,), "group_by": curve.group_by,
           "bootstrap_groups": (curve.bootstrap_groups,) if curve.bootstrap_groups else ()}
  for key, columns in named.items():
    missing = [c for c in columns if c not in produced]
    if missing:
      raise ConfigError(f"{curve.field}.{key} names column {missing[0]!r}, which no stage of "
                        f"this study produces (produced: {', '.join(sorted(produced))})")


def _check_holdout(curve: Curve, produced: set[str]) -> None:
  field, spec = f"{curve.field}.holdout", curve.holdout
  if spec in ("none", ""):
    return
  kind, _, arg = spec.partition(":")
  if kind == "column":
    if arg not in produced:
      raise ConfigError(f"{field} {spec!r} names column {arg!r}, which no stage of this study "
                        f"produces (produced: {', '.join(sorted(produced))})")
    return
  if kind == "smallest" and arg.strip() == "0":
    raise ConfigError(f"{field} {spec!r} fits no point at all")
  try:  # fits' own parser, on as many points as the spec names
    fits.core.heldout_mask(spec, np.arange(int(arg) if arg.strip().isdigit() else 0))
  except ValueError as e:
    raise ConfigError(f"{field}: {e}; or 'none', or 'column:NAME' to hold out the rows where "
                      "bool column NAME is true") from e


def _check_where(curve: Curve, produced: set[str]) -> None:
  if not curve.where:
    return
  empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in sorted(produced)})
  try:  # an empty frame of the produced columns: catches syntax and unknown names
    empty.query(curve.where)
  except Exception as e:  # pandas raises many kinds here, each a bad query
    raise ConfigError(f"{curve.field}.where {curve.where!r} cannot select rows: {e} "
                      f"(columns: {', '.join(sorted(produced))})") from e


def _check_plots(kinds: Sequence[str], configured: list[Curve]) -> None:
  laws = {c.law for c in configured}
  for kind in kinds:
    if kind not in PLOT_LAWS:
      raise ConfigError(f"report.plots: unknown plot kind {kind!r} (known: {', '.join(PLOT_LAWS)})")
    needed = PLOT_LAWS[kind]
    if needed is None and not configured:
      raise ConfigError(f"report.plots names {kind!r}, but fits.curves is empty")
    if needed is not None and needed not in laws:
      raise ConfigError(f"report.plots names {kind!r}, which draws a {needed!r} fit, but no "
                        f"curve in fits.curves has law {needed!r} "
                        f"(laws: {', '.join(sorted(laws)) or 'none'})")


def _is_positive_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0)


# ------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------

def fit_all(cfg: ml_collections.ConfigDict, frame: pd.DataFrame) -> dict[tuple, fits.FitResult]:
  """Every configured curve fitted per group: {(curve name, *group values): FitResult}.

  Only rows with status 'ok' are fitted; diverged and failed runs are left out and
  counted in the fit's diagnostics. A fit that cannot run is a 'not fitted' row.
  """
  out = {}
  for curve in curves(cfg):
    for group in groups(curve, frame):
      out[(curve.name, *group.values)] = _fit_group(cfg, curve, group)
  return out


def groups(curve: Curve, frame: pd.DataFrame) -> Iterator[Group]:
  """The curve's groups: rows its `where` selects, split by `group_by`, in sorted order."""
  selected = _select(curve, frame)
  if not curve.group_by:
    parts = [((), selected)] if len(selected) else []
  else:  # dropna=False: a column left null for some rows must not drop them silently
    parts = selected.groupby(list(curve.group_by), sort=True, dropna=False)
  for values, rows in parts:
    values = values if isinstance(values, tuple) else (values,)
    ok = rows[rows["status"] == "ok"]
    ok = ok.sort_values(list(curve.inputs), kind="stable").reset_index(drop=True)
    left_out = rows.loc[rows["status"] != "ok", "status"].value_counts()
    yield Group(tuple(_plain(v) for v in values), ok,
                {str(k): int(n) for k, n in sorted(left_out.items())})


def _select(curve: Curve, frame: pd.DataFrame) -> pd.DataFrame:
  """The rows of the kind the curve's target belongs to (a translation row has no LM
  loss), filtered by its `where`."""
  for kind, columns in results.KIND_COLUMNS.items():
    if curve.target in columns and "kind" in frame:
      frame = frame[frame["kind"] == kind]
  if not curve.where:
    return frame
  try:
    return frame.query(curve.where)
  except Exception as e:  # e.g. a comparison with a column that holds no values here
    raise ValueError(f"{curve.field}.where {curve.where!r} fails on the results: {e}") from e


def _plain(value: Any) -> Any:
  """A group value as a plain Python value; NaN becomes None so keys compare equal."""
  if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
    return None
  return value.item() if hasattr(value, "item") else value


def _fit_group(cfg: ml_collections.ConfigDict, curve: Curve, group: Group) -> fits.FitResult:
  notes = [f"left out {n} {status} run{'s' * (n > 1)}" for status, n in group.left_out.items()]
  rows, x = group.rows, law_inputs(curve, group.rows)
  if rows.empty:
    return _not_fitted(curve, x, "no successful runs", notes)
  n_resamples = int(cfg.fits.get("bootstrap", 0))
  options = dict(holdout=_holdout(curve.holdout, rows), delta=curve.delta,
                 bootstrap=n_resamples, seed=int(cfg.get("seed", 0)))
  blocks, block_notes = _bootstrap_blocks(curve, rows, n_resamples)
  if blocks is not None:
    options["bootstrap_groups"] = blocks
  try:
    result = fits.fit(curve.law, x, rows[curve.target].to_numpy(float), **options)
  except ValueError as e:  # e.g. BLEU 0 under a log-law: say so in the table
    return _not_fitted(curve, x, str(e), notes)
  result.diagnostics.extend(block_notes + notes)
  return result


def law_inputs(curve: Curve, rows: pd.DataFrame) -> pd.DataFrame:
  """The curve's input columns renamed to the law's input names (fernandes_joint reads 'p')."""
  names = curve.law_input_names()
  return pd.DataFrame({name: rows[column].to_numpy(float)
                       for name, column in zip(names, curve.inputs)})


def _holdout(spec: str, rows: pd.DataFrame) -> str | np.ndarray | None:
  if spec in ("none", ""):
    return None
  if spec.startswith("column:"):
    column = rows[spec.removeprefix("column:")]
    return np.array([not pd.isna(v) and bool(v) for v in column], dtype=bool)
  kind, _, k = spec.partition(":")
  if kind == "smallest" and k.strip().isdigit() and int(k) >= len(rows):
    return None  # a curve with no more checkpoints than the k to fit is fitted on all of them
  return spec


def _bootstrap_blocks(curve: Curve, rows: pd.DataFrame,
                      n_resamples: int) -> tuple[np.ndarray | None, list[str]]:
  """Block labels for fits.fit's block bootstrap, or None (then a point bootstrap)."""
  column = curve.bootstrap_groups
  if not column or not n_resamples:
    return None, []
  labels, distinct = pd.factorize(rows[column], use_na_sentinel=False)
  if len(distinct) < 2:  # one block: resampling it changes nothing
    return None, [f"point bootstrap: the fit holds a single {column} value"]
  return labels, []


def _not_fitted(curve: Curve, x: pd.DataFrame, why: str, notes: list[str]) -> fits.FitResult:
  law = _law_for(curve, x)
  nan = float("nan")
  return fits.FitResult(
      law=law.name, formula=law.latex, param_names=law.param_names,
      params={n: nan for n in law.param_names}, ci={}, se={}, n_points=len(x), n_fit=0,
      train_error=nan, heldout_error=nan, objective=nan, loss="", delta=nan,
      status="failed", diagnostics=[f"not fitted: {why}", *notes], law_obj=law)


def _law_for(curve: Curve, x: pd.DataFrame) -> fits.laws.Law:
  """The law as fits.fit builds it: fernandes_joint takes one beta per weight in the data."""
  if curve.law == "fernandes_joint":
    try:
      return fits.laws.fernandes_joint(x["p"].to_numpy())
    except ValueError:
      pass  # no usable weights: the default law still names the parameters
  return fits.laws.get(curve.law)


# ------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------

def write(cfg: ml_collections.ConfigDict, workdir: epath.PathLike, frame: pd.DataFrame) -> None:
  """Fits every curve and writes the tables and the configured plots into `workdir`."""
  workdir = epath.Path(workdir)
  fitted = fit_all(cfg, frame)
  if not fitted:
    print("no complete curves to fit yet", flush=True)
    return
  configured = {c.name: c for c in curves(cfg)}
  named = {fit_name(configured[key[0]], key[1:]): result for key, result in fitted.items()}
  table = with_isik_rule(fits.tables.to_frame(named), configured.values(), frame, fitted)
  derived = derived_quantities(configured.values(), frame, fitted)
  markdown = fits.tables.to_markdown(table) + _derived_markdown(derived)
  (workdir / "fits.md").write_text(markdown)
  (workdir / "fits.tex").write_text(fits.tables.to_latex(table))
  with_groups = _with_group_columns(table, configured, fitted)
  (workdir / "fits.csv").write_text(fits.tables.to_csv(with_groups))
  if derived:
    (workdir / "fits_derived.csv").write_text(_csv_text(pd.DataFrame(derived)))
  write_plots(plot_kinds(cfg), configured.values(), frame, fitted, workdir / "plots")
  print(markdown, flush=True)


def fit_name(curve: Curve, values: tuple) -> str:
  """'bleu | size=tiny | mixture=aligned | pair=xa-ya | D_f=15000'."""
  return " | ".join([curve.name] + [f"{c}={_fmt(v)}" for c, v in zip(curve.group_by, values)])


def _fmt(value: Any) -> str:
  if value is None:
    return "none"
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return f"{value:g}" if isinstance(value, float) else str(value)


def _with_group_columns(table: pd.DataFrame, configured: dict[str, Curve],
                        fitted: dict[tuple, fits.FitResult]) -> pd.DataFrame:
  """The table plus machine-readable columns: the curve name and each group column."""
  rows = [{"curve": key[0], **dict(zip(configured[key[0]].group_by, key[1:]))} for key in fitted]
  keys = pd.DataFrame(rows, index=table.index)
  return pd.concat([table[["group"]], keys, table.drop(columns="group")], axis=1)


def with_isik_rule(table: pd.DataFrame, configured, frame: pd.DataFrame,
                   fitted: dict[tuple, fits.FitResult]) -> pd.DataFrame:
  """The table (one row per `fitted` key, in order) plus an `isik_rule` column after `status`
  when any curve is a log-law: the verdict for log-law rows, empty for the others."""
  if not any(curve.law == "log_law" for curve in configured):
    return table
  verdicts = isik_verdicts(configured, frame, fitted)
  table = table.copy()
  table.insert(table.columns.get_loc("status") + 1, "isik_rule",
               [verdicts.get(key, "") for key in fitted])
  return table


def isik_verdicts(configured, frame: pd.DataFrame,
                  fitted: dict[tuple, fits.FitResult]) -> dict[tuple, str]:
  """Isik et al.'s rule (fits.isik.verdict) for each log-law fit that has a CE curve: a curve
  with target 'ce', the same inputs and the same group_by, whose group of the same values
  gives the cross-entropy data.  {fit key: verdict}."""
  configured = list(configured)
  ce_rows = {(c.name, *g.values): g.rows for c in configured if c.target == "ce"
             for g in groups(c, frame)}
  verdicts = {}
  for curve, group, result in _each_fit(configured, frame, fitted):
    partner = _ce_partner(curve, configured) if curve.law == "log_law" else None
    if partner is None:
      continue
    d_p = curve.inputs[0]
    ce = ce_rows.get((partner.name, *group.values), pd.DataFrame({d_p: [], "ce": []}))
    verdicts[(curve.name, *group.values)] = isik.verdict(
        result, group.rows[d_p], group.rows[curve.target], ce[d_p], ce["ce"])
  return verdicts


def _ce_partner(curve: Curve, configured: list[Curve]) -> Curve | None:
  """The first CE curve over the same inputs and groups as `curve` (Isik's pair of curves)."""
  for other in configured:
    if other.target == "ce" and other.inputs == curve.inputs and other.group_by == curve.group_by:
      return other
  return None


def _csv_text(table: pd.DataFrame) -> str:
  return table.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def derived_quantities(configured, frame: pd.DataFrame,
                       fitted: dict[tuple, fits.FitResult]) -> list[dict]:
  """Rows (group, curve, quantity, value) of what each successful fit implies."""
  rows = []
  for curve, group, result in _each_fit(configured, frame, fitted):
    if not result.ok:
      continue
    for quantity, value in _implied(curve, group, result):
      rows.append(dict(group=fit_name(curve, group.values), curve=curve.name,
                       quantity=quantity, value=float(f"{value:.6g}")))
  return rows


def _implied(curve: Curve, group: Group, result: fits.FitResult) -> list[tuple[str, float]]:
  if curve.law == "ghorbani":
    return [("optimal encoder share p_e/(p_e+p_d)",
             fits.laws.ghorbani_optimal_split(result.params))]
  if curve.law == "fernandes_joint":
    try:
      fraction = fits.laws.fernandes_effective_fraction(result.params)
    except ValueError:  # no p = 1 in the data: f(p) has no reference
      return []
    return [(f"f(p={p:g})", f) for p, f in fraction.items()]
  if curve.law == "chinchilla":
    compute = _compute_range(law_inputs(curve, group.rows), 5)
    n_opt, d_opt = fits.laws.chinchilla_compute_optimal(result.params, compute)
    alpha, beta = result.params["alpha"], result.params["beta"]
    return ([("N* exponent a = beta/(alpha+beta)", beta / (alpha + beta)),
             ("D* exponent b = alpha/(alpha+beta)", alpha / (alpha + beta))]
            + [(f"N*(C={c:.3g})", n) for c, n in zip(compute, n_opt)]
            + [(f"D*(C={c:.3g})", d) for c, d in zip(compute, d_opt)])
  return []


def _compute_range(x: pd.DataFrame, n_points: int) -> np.ndarray:
  """C = 6 N D over the data's range: the convention the compute-optimal formula assumes."""
  compute = 6.0 * x["N"].to_numpy() * x["D"].to_numpy()
  return np.geomspace(compute.min(), compute.max(), n_points)


def _derived_markdown(derived: list[dict]) -> str:
  if not derived:
    return ""
  lines = ["", "Implied by the fitted laws:", "", "| group | quantity | value |", "|---|---|---|"]
  escape = lambda text: text.replace("|", r"\|")  # noqa: E731 (a cell may not hold a bare |)
  lines += [f"| {escape(r['group'])} | {r['quantity']} | {r['value']:.4g} |" for r in derived]
  return "\n".join(lines) + "\n"


def _each_fit(configured, frame: pd.DataFrame,
              fitted: dict[tuple, fits.FitResult]) -> Iterator[tuple[Curve, Group, fits.FitResult]]:
  for curve in configured:
    for group in groups(curve, frame):
      result = fitted.get((curve.name, *group.values))
      if result is not None:
        yield curve, group, result


# ------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------

def write_plots(kinds: Sequence[str], configured, frame: pd.DataFrame,
                fitted: dict[tuple, fits.FitResult], folder: epath.Path) -> list[epath.Path]:
  """Draws each kind for each curve it applies to; returns the files written."""
  if not kinds:
    return []
  folder = epath.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  written = []
  for kind in kinds:
    for curve in configured:
      if PLOT_LAWS[kind] not in (None, curve.law):
        continue
      fitted_groups = [(g, r) for c, g, r in _each_fit([curve], frame, fitted)]
      for filename, figure in _PLOTTERS[kind](curve, fitted_groups):
        written.append(_save(figure, folder / filename))
  return written


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(figure, path: epath.Path) -> epath.Path:
  buffer = io.BytesIO()  # bytes first: savefig cannot write to a gs:// path
  figure.tight_layout()
  figure.savefig(buffer, format="png", dpi=DPI)
  _pyplot().close(figure)
  path.write_bytes(buffer.getvalue())
  return path


def _label(column: str) -> str:
  return AXIS_LABELS.get(column, column)


def _slug(values: Sequence[Any]) -> str:
  return "_".join(re.sub(r"[^A-Za-z0-9.=-]+", "_", _fmt(v)) for v in values)


def _draw_series(ax, curve: Curve, group: Group, result: fits.FitResult, vary: str,
                 label: str = "") -> None:
  """Data and (when fitted) the law against input `vary`, one line per value of the others.

  Held-out points are drawn hollow, the law's extrapolation dashed.
  """
  import matplotlib.ticker

  x = law_inputs(curve, group.rows)
  y = group.rows[curve.target].to_numpy(float)
  held = (~result.fit_mask if result.fit_mask is not None and len(result.fit_mask) == len(y)
          else np.zeros(len(y), dtype=bool))
  columns = dict(zip(x.columns, curve.inputs))
  others = [n for n in x.columns if n != vary]
  parts = x.groupby(others, sort=True) if others else [((), x)]
  for values, part in parts:
    values = values if isinstance(values, tuple) else (values,)
    name = ", ".join([label] * bool(label) +
                     [f"{columns[n]}={_short(v)}" for n, v in zip(others, values)])
    idx = part.index.to_numpy()
    if result.ok:
      fits.plots.plot_fit(ax, part, y[idx], result, label=name or None, heldout_mask=held[idx],
                          vary=vary)
    else:
      ax.plot(part[vary], y[idx], "o:", label=f"{name or curve.name}, no fit")
  if (x[vary] > 0).all():
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # unreadable when dense
  ax.set_xlabel(_label(columns[vary]))
  ax.set_ylabel(_label(curve.target))


def _short(value: float) -> str:
  """A legend's number: 3e+07 rather than 30000000."""
  return f"{value:.3g}" if abs(value) >= 1e4 else _fmt(_plain(value))


def _group_label(curve: Curve, values: tuple) -> str:
  return ", ".join(f"{c}={_fmt(v)}" for c, v in zip(curve.group_by, values))


def _title(curve: Curve, values: tuple) -> str:
  """'loss (pair=xa-ya)', or the curve name alone when it has no groups."""
  groups_label = _group_label(curve, values)
  return f"{curve.name} ({groups_label})" if groups_label else curve.name


def _plot_curves(curve: Curve, fitted_groups: list) -> Iterator[tuple[str, Any]]:
  """Target against the first input, one file per value of the first group column."""
  plt = _pyplot()
  by_file: dict[tuple, list] = {}
  for group, result in fitted_groups:
    by_file.setdefault(group.values[:1], []).append((group, result))
  first_input = curve.law_input_names()[0]
  for head, members in by_file.items():
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, result in members:
      rest = zip(curve.group_by[1:], group.values[1:])  # the first names the file
      _draw_series(ax, curve, group, result, first_input,
                   label=", ".join(f"{c}={_fmt(v)}" for c, v in rest))
    where = f", {curve.group_by[0]} {_fmt(head[0])}" if head else ""
    ax.set_title(f"{_label(curve.target)} vs {curve.inputs[0]}{where}")
    ax.legend(fontsize=8)
    yield f"{curve.name}{'_' + _slug(head) if head else ''}.png", fig


def _file_suffix(values: tuple) -> str:
  return f"_{_slug(values)}" if values else ""


def _plot_ghorbani(curve: Curve, fitted_groups: list) -> Iterator[tuple[str, Any]]:
  """Loss against N_e for each N_d, and against N_d for each N_e; one file per group."""
  plt = _pyplot()
  encoder, decoder = curve.law_input_names()
  for group, result in fitted_groups:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _draw_series(left, curve, group, result, encoder)
    _draw_series(right, curve, group, result, decoder)
    for ax in (left, right):
      ax.legend(fontsize=7)
    if result.ok:
      share = fits.laws.ghorbani_optimal_split(result.params)
      verdict = f"optimal encoder share N_e/(N_e+N_d) = {share:.2f}"
    else:
      verdict = "no fit"
    fig.suptitle(f"{_title(curve, group.values)}: {verdict}")
    yield f"ghorbani_{curve.name}{_file_suffix(group.values)}.png", fig


def _plot_fernandes(curve: Curve, fitted_groups: list) -> Iterator[tuple[str, Any]]:
  """Loss against N per weight p, one panel per group (pair); then f(p) against p."""
  plt = _pyplot()
  if not fitted_groups:
    return
  fig, axes = plt.subplots(1, len(fitted_groups), figsize=(5.5 * len(fitted_groups), 4),
                           squeeze=False)
  for ax, (group, result) in zip(axes[0], fitted_groups):
    _draw_series(ax, curve, group, result, curve.law_input_names()[0])
    ax.set_title(_group_label(curve, group.values) or curve.name, fontsize=9)
    ax.legend(fontsize=7)
  yield f"fernandes_{curve.name}.png", fig
  yield f"fernandes_fraction_{curve.name}.png", _fraction_figure(curve, fitted_groups)


def _fraction_figure(curve: Curve, fitted_groups: list):
  """f(p) = (beta_1 / beta_p)^(1/alpha): the share of the model a weight-p pair gets."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  ax.plot([0, 1], [0, 1], "k:", label="f(p) = p")
  for group, result in fitted_groups:
    try:
      fraction = fits.laws.fernandes_effective_fraction(result.params) if result.ok else {}
    except ValueError:  # no p = 1 among the weights
      fraction = {}
    if fraction:
      ax.plot(list(fraction), list(fraction.values()), "o-",
              label=_group_label(curve, group.values) or curve.name)
  ax.set_xlabel(_label("p"))
  ax.set_ylabel("effective parameter fraction f(p)")
  ax.set_title(f"{curve.name}: effective parameters per weight")
  ax.legend(fontsize=7)
  return fig


def _plot_ladder(curve: Curve, fitted_groups: list) -> Iterator[tuple[str, Any]]:
  """Loss against D per N (log-log) with the compute-optimal frontier; N*(C), D*(C)."""
  plt = _pyplot()
  params_name, data_name = curve.law_input_names()
  for group, result in fitted_groups:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _draw_series(left, curve, group, result, data_name)
    left.set_yscale("log")
    x = law_inputs(curve, group.rows)
    if result.ok and len(x):
      _draw_frontier(left, right, result, x)
    left.legend(fontsize=7)
    fig.suptitle(f"{_title(curve, group.values)}: {curve.target} against {curve.inputs[1]} "
                 f"per {curve.inputs[0]}, and the compute-optimal frontier")
    yield f"ladder_{curve.name}{_file_suffix(group.values)}.png", fig


def _draw_frontier(left, right, result: fits.FitResult, x: pd.DataFrame) -> None:
  compute = _compute_range(x, 50)
  with np.errstate(all="ignore"):
    n_opt, d_opt = fits.laws.chinchilla_compute_optimal(result.params, compute)
    loss_opt = result.predict({"N": n_opt, "D": d_opt})
  left.plot(d_opt, loss_opt, "k--", label="compute-optimal")
  data_compute = 6.0 * x["N"] * x["D"]
  right.plot(compute, n_opt, color="C0", label="N*(C)")
  right.plot(compute, d_opt, color="C1", label="D*(C)")
  right.scatter(data_compute, x["N"], color="C0", s=14, label="runs: N")
  right.scatter(data_compute, x["D"], color="C1", s=14, marker="s", label="runs: D")
  right.set_xscale("log")
  right.set_yscale("log")
  right.set_xlabel("compute C = 6 N D (FLOPs)")
  right.set_ylabel("parameters / tokens")
  alpha, beta = result.params["alpha"], result.params["beta"]
  right.set_title(f"N* ~ C^{beta / (alpha + beta):.2f}, D* ~ C^{alpha / (alpha + beta):.2f}",
                  fontsize=9)
  right.legend(fontsize=7)


_PLOTTERS = {"curves": _plot_curves, "ghorbani": _plot_ghorbani, "fernandes": _plot_fernandes,
             "ladder": _plot_ladder}
