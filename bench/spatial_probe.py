"""Does a probe that keeps the spatial layout close the gap between a pretrained CNN and raw pixels?

Issue 25's evidence found a linear probe on the pretrained CNN's pooled features (0.17 QWK) far below one on raw
pixels (0.54), and asked whether pooling, which drops the layout of aligned knees, is the cause. This bench probes
the last feature map three ways (average-pooled; 2 x 2 and 4 x 4 grids) for the pretrained backbone and a random
one of the same network, against a PCA of the pixels, all with one protocol, and prints each QWK as a ratio to the
pixels' in the same run.

    python bench/spatial_probe.py /path/to/run/backbone.safetensors            # about 15 CPU minutes on 2 cores

Protocol: images read straight from ../shared/data/knee-xray-kl (train 2,503, val 826) and shown as the evaluator
shows them (evaluation.embed.preprocess, the backbone's input size); standardised features, logistic regression,
C chosen on half of val's patients, QWK on the other half. A quick check of one question, not the evaluator's
protocol with patient-bootstrap CIs (bench/evidence.py is that).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"] + [str(ROOT)]
DATA = ROOT.parent / "shared" / "data" / "knee-xray-kl"


def knees(split: str) -> list[tuple[Path, int, str]]:
    """(path, KL grade, patient) of every knee in a split: the folder is the grade, the name starts with the id."""
    return [(p, int(p.parent.name), re.match(r"\d+", p.name)[0]) for p in sorted(DATA.glob(f"{split}/*/*.png"))]


def patient_halves(rows: list, seed: int = 0) -> tuple[list[int], list[int]]:
    patients = sorted({r[2] for r in rows})
    np.random.default_rng(seed).shuffle(patients)
    select = set(patients[: len(patients) // 2])
    return [i for i, r in enumerate(rows) if r[2] in select], [i for i, r in enumerate(rows) if r[2] not in select]


def probe(x_train, y_train, x_val, y_val, halves) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(x_train)
    x_train, x_val = scale.transform(x_train), scale.transform(x_val)
    select, test = halves
    best = None
    for c in (0.001, 0.01, 0.1, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 300 iterations: the ranking is what is asked
            model = LogisticRegression(C=c, max_iter=300).fit(x_train, y_train)
        score = cohen_kappa_score(y_val[select], model.predict(x_val[select]), weights="quadratic")
        if best is None or score > best[0]:
            best = (score, model)
    return float(cohen_kappa_score(y_val[test], best[1].predict(x_val[test]), weights="quadratic"))


def pooled_features(model, images) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        maps = torch.cat([model.forward_features(images[i:i + 64]).float() for i in range(0, len(images), 64)])
    return {"average-pooled": maps.mean((2, 3)).numpy(), "2x2 grid": F.adaptive_avg_pool2d(maps, 2).flatten(1).numpy(),
            "4x4 grid": F.adaptive_avg_pool2d(maps, 4).flatten(1).numpy()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbone", help="an exported CNN backbone.safetensors (a run folder's)")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"no {DATA}: this bench needs the shared knee radiographs", file=sys.stderr)
        return 2
    import torch
    from PIL import Image
    from sklearn.decomposition import PCA

    from evaluation.embed import preprocess
    from training.backbone import build_backbone, load_exported

    pretrained, spec = load_exported(args.backbone)
    torch.manual_seed(0)
    random_init, _, _ = build_backbone(spec.name, spec.in_chans, spec.img_size, kwargs=spec.kwargs)
    train, val = knees("train"), knees("val")
    halves = patient_halves(val)
    began = time.monotonic()

    def images(rows):
        return torch.stack([preprocess(np.asarray(Image.open(r[0])), spec.img_size, spec.mean[0], spec.std[0])
                            for r in rows])

    x_train, x_val = images(train), images(val)
    y_train, y_val = np.array([r[1] for r in train]), np.array([r[1] for r in val])
    pca = PCA(256, random_state=0).fit(x_train.flatten(1).numpy())
    pixels = probe(pca.transform(x_train.flatten(1).numpy()), y_train, pca.transform(x_val.flatten(1).numpy()),
                   y_val, halves)
    print(f"{len(train)} train knees, {len(halves[1])} test knees; {spec.name} at {spec.img_size} px")
    print(f"{'features':34s} {'QWK':>6s} {'/ pixels':>9s}")
    print(f"{'raw pixels, PCA 256':34s} {pixels:6.3f} {1.0:9.2f}")
    for name, model in (("pretrained", pretrained.eval()), ("random init", random_init.eval())):
        train_f, val_f = pooled_features(model, x_train), pooled_features(model, x_val)
        for pool in train_f:
            qwk = probe(train_f[pool], y_train, val_f[pool], y_val, halves)
            print(f"{name + ', ' + pool:34s} {qwk:6.3f} {qwk / pixels:9.2f}", flush=True)
    print(f"{time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
