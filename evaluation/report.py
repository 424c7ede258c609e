"""The evaluation report: one self-contained HTML page (plots and thumbnails inlined), the same plots
as PNG files beside it, and the metrics.json it is drawn from.

    write_report(workspace/evals/<eval_id>, ws)  ->  report.html, label_efficiency_<task>.png,
                                                confusion_<task>.png, retrieval.png

Headline figures are the test part at 100% of the labels; a row run with several seeds shows the
mean over seeds of the point estimate and of the 95% CI bounds (bootstrap over patients). Label-efficiency curves show
the mean over seeds with the seeds' range as a band.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from catalog import html as html_page
from catalog.figures import figure_png
from catalog.files import atomic_write
from catalog.pixel_budget import PixelsRefused
from catalog.store import ImageStore
from catalog.workspace import Workspace

METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "macro_f1": "macro-F1",
                "qwk": "QWK", "auroc": "AUROC", "auprc": "AUPRC"}
ORDER = {"pretrained": 0, "supervised": 2, "random": 3, "pixels": 4, "majority": 5}


def model_order(name: str) -> int:
    return ORDER.get(name, 1)  # other checkpoints right after the one under evaluation


def group_results(results: list[dict], task: str) -> dict[tuple[str, str], dict[float, list[dict]]]:
    """{(model, protocol): {fraction: [result per seed]}} for one task."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["task"] == task:
            out[(r["model"], r["protocol"])][r["fraction"]].append(r)
    return out


def seed_summary(runs: list[dict], metric: str) -> tuple[float, float, float, float, float, int]:
    """(mean over seeds of the point estimates, of the CI lows, of the CI highs, min, max, seeds).
    NaN (a metric undefined on this test set) when no seed has a value."""
    values = np.array([r["metrics"][metric] for r in runs if metric in r["metrics"]], float).reshape(-1, 3)
    finite = values[np.isfinite(values[:, 0])]
    if not len(finite):
        return (float("nan"),) * 5 + (len(runs),)
    point, lo, hi = (float(np.nanmean(finite[:, k])) if np.isfinite(finite[:, k]).any() else float("nan")
                     for k in range(3))
    return point, lo, hi, float(finite[:, 0].min()), float(finite[:, 0].max()), len(runs)


def pct(fraction: float) -> str:
    """0.125 -> '12.5%', 0.5 -> '50%'."""
    return f"{fraction * 100:g}%"


# The supervised baselines, trained on the task from random init: the CNN (its own budget), the ViT (fine-tuned
# with the checkpoint's budget). The label-efficiency sentence measures against the better one.
SUPERVISED = (("supervised", "train"), ("supervised", "finetune"))


def supervised_reference(groups, metric: str) -> tuple[float, tuple[str, str], str] | None:
    """(its metric at 100% of the labels, its key, its name) for the best supervised baseline, or None."""
    have = [(seed_summary(groups[k][1.0], metric)[0], k) for k in SUPERVISED if 1.0 in groups.get(k, {})]
    have = [(v, k) for v, k in have if np.isfinite(v)]
    if not have:
        return None
    value, key = max(have)
    arch = groups[key][1.0][0].get("architecture") or "the same architecture"
    how = "trained" if key[1] == "train" else "fine-tuned"
    return value, key, f"the supervised baseline ({arch} {how} from random init)"


def label_efficiency_sentence(groups, metric: str) -> str:
    """Answers "does the pretrained model match the supervised baseline with fewer labels?": each
    protocol of the pretrained model against the best supervised baseline (a CNN trained, or the same ViT
    fine-tuned, from random init) at 100% of the labels, or, without one, against random init under the same
    protocol; with a caution first when that baseline is itself at the majority class's level."""
    sentences = []
    majority = groups.get(("majority", "majority"), {}).get(1.0)
    floor = seed_summary(majority, metric)[0] if majority else None
    if floor is not None and not np.isfinite(floor):
        floor = 0.5 if metric == "auroc" else None
    supervised = supervised_reference(groups, metric)
    if supervised and floor is not None and supervised[0] <= floor + 0.05 and \
            any(("pretrained", p) in groups for p in ("finetune", "linear", "knn")):
        sentences.append(f"Caution: the best supervised baseline is itself at the majority class's level "
                         f"({METRIC_NAMES[metric]} {supervised[0]:.3f} vs {floor:.3f}), so matching it says little.")
    for proto in ("finetune", "linear", "knn"):
        curve = groups.get(("pretrained", proto))
        if supervised:
            ref, _, ref_name = supervised
        elif 1.0 in groups.get(("random", proto), {}):
            ref = seed_summary(groups[("random", proto)][1.0], metric)[0]
            ref_name = "the same architecture at random init"
        else:
            continue
        if not curve:
            continue
        points = sorted((f, seed_summary(runs, metric)[0]) for f, runs in curve.items())
        match = next(((f, v) for f, v in points if v >= ref), None)
        name = {"finetune": "Fine-tuned", "linear": "With a linear probe", "knn": "With kNN"}[proto]
        if match:
            sentences.append(f"{name}, the pretrained backbone matches {ref_name} trained on 100% of the labels "
                             f"with {pct(match[0])} of them ({METRIC_NAMES[metric]} {match[1]:.3f} vs {ref:.3f}).")
        else:
            best = max(points, key=lambda p: p[1])
            sentences.append(f"{name}, the pretrained backbone does not reach {ref_name} at 100% of the labels "
                             f"({METRIC_NAMES[metric]} {ref:.3f}) at any fraction measured; its best is "
                             f"{best[1]:.3f} at {pct(best[0])}.")
    return " ".join(sentences) or "No baseline at 100% of the labels to compare the pretrained backbone against."


def budget_note(groups) -> str:
    """What each trained model (fine-tuned or trained from random init) was allowed and used, or ''."""
    notes = []
    for (model, proto), by_f in sorted(groups.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1])):
        runs = [r for rs in by_f.values() for r in rs if r.get("budget")]
        if not runs:
            continue
        full = [r for r in by_f.get(1.0, []) if r.get("budget")] or runs
        b = full[0]["budget"]
        ran = sorted(r["budget"]["epochs_run"] for r in full)
        kept = sorted(r["chosen"]["epoch"] for r in full)
        secs = sorted(r["budget"]["seconds"] for r in runs)
        stop = f", early stopping after {b['patience']} epochs without a better val score" if b.get("patience") else ""
        stop += f", at least {b['min_steps']} steps at any fraction" if b.get("min_steps") else ""
        notes.append(f"{model} · {proto}: {b.get('model') or 'the checkpoint'} ({b['params'] / 1e6:.1f}M "
                     f"parameters) at {b['img_size']} px, up to {b['epochs']} epochs{stop}; at 100% of the labels "
                     f"ran {_span(ran)} epochs, kept epoch {_span(kept)}; {_span(secs, '{:.0f}')} s per run "
                     f"({len(runs)} runs, {b['threads']} threads)")
    return ("Training budgets: " + "; ".join(notes) + ".") if notes else ""


def _span(values: list, fmt: str = "{}") -> str:
    lo, hi = fmt.format(values[0]), fmt.format(values[-1])
    return lo if lo == hi else f"{lo}–{hi}"


def plot_label_efficiency(groups, metric: str, task: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in groups.items() if len(v) > 1
              and any(np.isfinite(r["metrics"][metric][0]) for runs in v.values() for r in runs)}
    if not curves:
        return None  # one fraction only, or a metric undefined on this test set (e.g. AUROC of one class)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (model, proto), by_f in sorted(curves.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1])):
        fs = sorted(by_f)
        stats = [seed_summary(by_f[f], metric) for f in fs]
        style = "-" if model == "pretrained" else "--"
        line, = ax.plot(fs, [s[0] for s in stats], style, marker="o", label=f"{model} · {proto}")
        ax.fill_between(fs, [s[3] for s in stats], [s[4] for s in stats], color=line.get_color(), alpha=0.15)
    fractions = sorted({f for v in curves.values() for f in v})
    ax.set_xscale("log", base=2)
    ax.set_xlim(fractions[0] / 1.2, fractions[-1] * 1.2)
    ax.set_xticks(fractions, [pct(f) for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("fraction of training labels (patients, stratified by class)")
    ax.set_ylabel(f"{METRIC_NAMES[metric]} on test")
    ax.set_title(f"{task}: label efficiency (mean over seeds, band = range)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    data = figure_png(fig, dpi=110)
    plt.close(fig)
    return data


def plot_confusions(groups, classes: list[str], task: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, min(v[1.0], key=lambda r: r["seed"])) for k, v in
              sorted(groups.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1])) if 1.0 in v]
    panels = [p for p in panels if p[0][0] in ("pretrained", "supervised", "random") or p[0][0] not in ORDER][:6]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for ax, ((model, proto), r) in zip(axes[0], panels):
        m = np.array(r["confusion"], float)
        rows = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(f"{model} · {proto}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.suptitle(f"{task}: confusion on test (100% labels, seed 0)", fontsize=9)
    data = figure_png(fig, dpi=110)
    plt.close(fig)
    return data


def plot_retrieval(store: ImageStore, retrieval: list[dict]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not retrieval:
        return None
    n = len(retrieval)
    fig, axes = plt.subplots(n, 6, figsize=(9, 1.6 * n), squeeze=False)
    for row, q in zip(axes, retrieval):
        items = [(q["query"], f"query · {q['label']}")] + \
                [(nb["image_id"], f"{nb['label']} · {nb['similarity']:.2f}") for nb in q["neighbours"]]
        for ax, (image_id, title) in zip(row, items):
            pixels = store.get(image_id)
            if pixels is not None:  # an image no store could give: the tile stays empty, the report goes on
                ax.imshow(_display(pixels), cmap="gray")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle("nearest training images of test queries (cosine, pretrained features; label · similarity)",
                 fontsize=8)
    data = figure_png(fig, dpi=110)
    plt.close(fig)
    return data


class _Thumbnails:
    """Pixels for the retrieval examples: the de-identified store, or the shard set evaluated."""

    def __init__(self, store: ImageStore, shards: str | None):
        self.store, self.shards, self._shard_images = store, shards, None

    def get(self, image_id: str) -> np.ndarray | None:
        """None for an image neither the store (within the pixel budget) nor the shard set can give."""
        try:
            return self.store.open(image_id)
        except PixelsRefused:
            if not self.shards:
                return None
            if self._shard_images is None:
                from evaluation.data import ShardImages

                self._shard_images = ShardImages(self.shards)
            try:
                return self._shard_images.get(image_id)
            except (KeyError, OSError, ValueError):
                return None


def _display(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(-1)
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    return np.clip((pixels.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def _fmt(summary, seeds_note: bool = True) -> str:
    mean, lo, hi, mn, mx, n = summary
    if not np.isfinite(mean):
        return "undefined"
    text = f"{mean:.3f} <span class=ci>[{lo:.3f}, {hi:.3f}]</span>"
    if seeds_note and n > 1:
        text += f" <span class=ci>({n} seeds: {mn:.3f}–{mx:.3f})</span>"
    return text


def _img(data: bytes | None, alt: str) -> str:
    return html_page.img_tag(data, alt)


CSS = html_page.CSS + """
.ci{color:#6a7283;font-size:.8em} .finding{background:#eef6ee;padding:.6rem .9rem;border-left:4px solid #3a8a3a;
margin:.8rem 0}
"""


def write_report(eval_dir: str | Path, ws: Workspace) -> Path:
    """Render report.html (self-contained) and the PNGs from eval_dir/metrics.json; thumbnails come from ws's store."""
    eval_dir = Path(eval_dir)
    doc = json.loads((eval_dir / "metrics.json").read_text())
    store = _Thumbnails(ImageStore(ws.store_dir), (doc.get("data") or {}).get("shards"))
    parts = _checkpoint_section(doc)
    pngs: dict[str, bytes] = {}
    for t in doc["tasks"]:
        parts += _task_section(doc["results"], t, pngs)
    retrieval = plot_retrieval(store, doc.get("retrieval") or [])
    if retrieval:
        pngs["retrieval.png"] = retrieval
        parts += ["<h2>Nearest neighbours</h2>", _img(retrieval, "retrieval examples")]
    parts.append(_settings_section(doc["config"]))
    page = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(doc['eval_id'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    for name, data in pngs.items():
        (eval_dir / name).write_bytes(data)
    atomic_write(eval_dir / "report.html", page)
    return eval_dir / "report.html"


def _checkpoint_section(doc: dict) -> list[str]:
    """The page title and the table of the checkpoint under evaluation."""
    ck = doc["checkpoint"]
    pre = ck.get("pretrained_on") or {}
    return [f"<h1>Evaluation {html.escape(doc['eval_id'])}</h1>",
             f"<p class=meta>created {html.escape(doc['created'])} · {doc['seconds']:.0f} s</p>",
             "<h2>Checkpoint</h2><table>",
             f"<tr><th>architecture</th><td>{html.escape(ck['architecture'])} at {ck['img_size']} px</td></tr>",
             f"<tr><th>file</th><td><code>{html.escape(Path(ck['path']).name)}</code> "
             f"sha256 <code>{html.escape((ck['sha256'] or '')[:16])}</code></td></tr>",
             f"<tr><th>pretraining run</th><td>{html.escape(str(pre.get('run_id') or 'unknown'))}</td></tr>",
             f"<tr><th>pretrained on</th><td>{html.escape(str(pre.get('shard_set') or 'unknown'))}: "
             f"{html.escape(', '.join(pre.get('body_part', [])) or 'unknown anatomy')} · "
             f"{html.escape(', '.join(pre.get('modality', [])) or 'unknown modality')}</td></tr>",
             f"<tr><th>baselines</th><td>{html.escape(', '.join(doc['baselines']) or 'none')} (+ majority class)"
             "</td></tr></table>"]


def _task_section(results: list[dict], t: dict, pngs: dict[str, bytes]) -> list[str]:
    """One task: heading, description, finding, the table at 100% of the labels and the plots (also
    added to `pngs` under their file names)."""
    task, metric = t["task"], t["primary_metric"]
    groups = group_results(results, task)
    names = [m for m in METRIC_NAMES if any(m in r["metrics"] for rs in groups.values() for r in rs.get(1.0, []))]
    transfer = next((r.get("transfer") for r in results if r["task"] == task and r["model"] == "pretrained"),
                    "unknown")
    parts = [_task_heading(t, transfer), _task_description(t),
             "".join(f"<p class=meta><b>Note</b>: {html.escape(n)}.</p>" for n in t.get("notes", [])),
             f"<div class=finding>{'<b>Smoke run</b> (too few patients or classes to measure): ' if t.get('smoke') else ''}"
             f"{html.escape(label_efficiency_sentence(groups, metric))}</div>",
             "<table><tr><th>model</th><th>protocol</th>"
             + "".join(f"<th>{METRIC_NAMES[m]}</th>" for m in names) + "<th>chosen on val</th></tr>"]
    parts += _result_rows(groups, names)
    parts.append("</table>")
    budgets = budget_note(groups)
    parts.append(f"<p class=meta>{html.escape(budgets)}</p>" if budgets else "")
    curve = plot_label_efficiency(groups, metric, task)
    conf = plot_confusions(groups, t["classes"], task)
    for name, data in ((f"label_efficiency_{task}.png", curve), (f"confusion_{task}.png", conf)):
        if data:
            pngs[name] = data
    return parts + [_img(curve, f"label efficiency {task}"), _img(conf, f"confusion {task}")]


def _task_heading(t: dict, transfer) -> str:
    return (f"<h2>{html.escape(t['task'])} <span class=meta>({html.escape(t['kind'])}, "
            f"{html.escape(t['level'])}-level, {html.escape(t['domain'])}, {html.escape(str(transfer))})"
            "</span></h2>")


def _task_description(t: dict) -> str:
    """The task, its split sizes and test class counts, and a warning when the test part holds one class."""
    sp = t["splits"]
    return (f"<p class=meta>{html.escape(t['description'])}. Fit on <b>{sp['fit']['images']}</b> images "
            f"({sp['fit']['patients']} patients), hyper-parameters chosen on <b>{sp['select']['images']}</b> "
            f"({sp['select']['patients']} patients), reported on <b>{sp['test']['images']}</b> test images "
            f"({sp['test']['patients']} patients)"
            + ("; the task has no test split, so half of its val patients were set aside as test"
               if sp["test_from_val"] else "") + f". Classes {', '.join(t['classes'])}; test counts "
            f"{t.get('test_classes', sp['test']['classes'])}"
            + (" (exams)" if t["level"] == "exam" else "") + ".</p>"
            + ("<p class=meta><b>The test part holds a single class</b>: metrics that compare classes "
               "(AUROC, AUPRC, QWK) are undefined on it.</p>"
               if sum(c > 0 for c in t.get("test_classes", [1, 1])) < 2 else ""))


def _result_rows(groups: dict, names: list[str]) -> list[str]:
    """A table row per (model, protocol) run at 100% of the labels: its metrics and what was chosen on val."""
    rows = []
    for (model, proto), by_f in sorted(groups.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1])):
        if 1.0 not in by_f:
            continue
        runs = by_f[1.0]
        chosen = min(runs, key=lambda r: r["seed"])["chosen"]
        chosen_text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in chosen.items() if k not in ("history", "select_score", "epochs",
                                                                        "epochs_run"))
        label = f"{model} ({runs[0]['architecture']})" if model == "supervised" and runs[0].get("architecture") \
            else model
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(proto)}</td>"
                    + "".join(f"<td class=num>{_fmt(seed_summary(runs, m))}</td>" for m in names)
                    + f"<td class=meta>{html.escape(chosen_text)}</td></tr>")
    return rows


def _settings_section(cfg: dict) -> str:
    return (f"<h2>Settings</h2><p class=meta>protocols {', '.join(cfg['protocols'])}; label fractions "
            f"{', '.join(f'{f:g}' for f in cfg['fractions'])}; seeds {cfg['seeds']}; features {cfg['pool']}; "
            f"kNN k from {list(cfg['knn_ks'])}, T={cfg['knn_temperature']}; linear C from "
            f"{list(cfg['linear_cs'])}; fine-tuning {cfg['finetune']['epochs']} epochs, lr "
            f"{cfg['finetune']['lr']:g}, layer decay {cfg['finetune']['layer_decay']}; "
            + (_supervised_settings(cfg["supervised"]) if "supervised" in cfg.get("baselines", []) and
               cfg.get("supervised") else "")
            + f"exam aggregation {cfg['exam_aggregation']}; {cfg['n_boot']} bootstrap draws over patients.</p>")


def _supervised_settings(s: dict) -> str:
    steps = f" and at least {s['min_steps']} steps" if s.get("min_steps") else ""
    loss = "a regressed grade" if s.get("head") == "grade" else \
        f"{'class-balanced ' if s['balanced'] else ''}cross-entropy"
    return (f"supervised CNN {html.escape(s['model'])} at {s['img_size']} px from random init, up to {s['epochs']} "
            f"epochs{steps} (early stopping, patience {s['patience']}), AdamW lr {s['lr']:g}, warm-up then cosine, "
            f"{loss}, random resized crop {list(s['crop_scale'])}, "
            f"rotation ±{s['rotation']:g}°, intensity jitter {s['intensity_jitter']:g}"
            f"{', mirrored' if s['hflip'] else ', no mirror'}; ")
