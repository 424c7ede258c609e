"""Near-duplicates that survive what re-exports do (bench/dups.py, on real knees): rotation, padding, mirror with
crop, blur and noise, and the treatments that worked before; never two knees joined, never a person's left and
right knee."""

import numpy as np
import pytest

from bench.dups import build_corpus, curate_groups, load_originals, score
from bench.reexports import TREATMENTS, reexport
from curation.dedup import keypoints
from curation.dedup.borders import content_box
from tests.shared_data import shared_data


@pytest.mark.slow
def test_reexports_of_unseen_knees_are_found_and_no_two_knees_join():
    shared_data("knee-xray-kl/val")
    originals, stems = load_originals("val", limit=320)  # sorted by grade then id: both knees of many patients
    patients = [s[:-1] for s in stems]
    assert len(set(patients)) < len(patients) - 40  # the left/right trap is in the corpus
    corpus = build_corpus(originals, stems, per=5, seed=7, strengths="0")
    group, cost = curate_groups(corpus)
    result = score(corpus, group)
    assert result["false_groups"] == 0 and result["left_right_merges"] == 0, cost["false_pairs"]
    found = {t: k for (t, _), (k, n) in result["recall"].items()}
    assert set(found) == set(TREATMENTS)
    # of 5 each, at the strength the issue measured; two treatments are below the goal (docs/benchmarks.md)
    below_goal = {"blur 1 + noise 6": 2, "crop + gamma + JPEG": 3}
    short = {t: k for t, k in found.items() if k < below_goal.get(t, 4)}
    assert not short, found
    assert sum(found.values()) >= 0.85 * 5 * len(TREATMENTS), found
    assert cost["crop_candidates_per_image"] < 10  # a handful of checks per image, not all pairs


def test_mirror_permutation_is_sift_of_the_mirrored_image():
    import cv2

    shared_data("knee-xray-kl/val")
    originals, _ = load_originals("val", limit=6)
    sift = cv2.SIFT_create(nfeatures=200, contrastThreshold=0.01)
    cosines = []
    for a in originals:
        kp, d = sift.detectAndCompute(a, None)
        kpm, dm = sift.detectAndCompute(np.ascontiguousarray(a[:, ::-1]), None)
        pos = np.array([k.pt for k in kpm])
        for k, desc in zip(kp, d):
            dist = np.hypot(pos[:, 0] - (a.shape[1] - 1 - k.pt[0]), pos[:, 1] - k.pt[1])
            # SIFT may give one location several orientations: the mirrored one is the best match among them
            here = [j for j in np.flatnonzero(dist < 0.5) if abs(kpm[j].size - k.size) < 0.05 * k.size]
            if not here:
                continue
            u = desc[keypoints.MIRROR].astype(float)
            cos = [u @ dm[j] / (np.linalg.norm(u) * np.linalg.norm(dm[j].astype(float)) + 1e-9) for j in here]
            j = here[int(np.argmax(cos))]
            cosines.append(max(cos))
            if max(cos) > 0.99:
                assert abs(((180 - k.angle) - kpm[j].angle + 180) % 360 - 180) < 5  # keypoints.mirrored's angle (bins of 10)
    assert len(cosines) > 200 and np.median(cosines) > 0.99


def test_mirrored_keypoints_match_the_mirrored_image():
    shared_data("knee-xray-kl/val")
    a = load_originals("val", limit=1)[0][0]
    kp, desc = keypoints.features(a)
    kpm, descm = keypoints.features(np.ascontiguousarray(a[:, ::-1]))
    sims = keypoints.unit(desc[:, keypoints.MIRROR]) @ keypoints.unit(descm).T
    i = np.arange(len(sims))
    j = sims.argmax(1)
    keep = (sims[i, j] >= 0.95) & (sims.argmax(0)[j] == i)  # mutual nearest neighbours
    i, j = i[keep], j[keep]
    assert len(i) >= 8
    close = np.hypot(*(keypoints.mirrored(kp, a.shape[1])[i, :2] - kpm[j, :2]).T) < 2
    assert close.mean() > 0.8


def test_content_box_finds_padding_and_leaves_images_alone():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (300, 200)).astype(np.uint16)
    assert content_box(img) == (0, 300, 0, 200)
    padded = np.zeros((340, 230), np.uint16)
    padded[40:, 30:] = img  # pad above and to the left
    assert content_box(padded) == (40, 340, 30, 230)
    thin = np.zeros((304, 200), np.uint16)
    thin[4:] = img  # a band under 3% of the side is the image's own margin: kept
    assert content_box(thin) == (0, 304, 0, 200)
    assert content_box(np.full((50, 50), 9, np.uint8)) == (0, 50, 0, 50)
    big = np.zeros((3000, 2600), np.uint16)
    big[:, 300:] = rng.integers(0, 4000, (3000, 2300))
    y0, y1, x0, x1 = content_box(big)  # measured on every 3rd line: rounded inwards, never into the pad
    assert (y0, y1, x1) == (0, 3000, 2600) and 300 <= x0 <= 303


def test_keypoints_skip_the_pad():
    shared_data("knee-xray-kl/val")
    a = load_originals("val", limit=1)[0][0]
    padded = reexport(a, "padded 8-15%", 0, np.random.default_rng(3))
    y0, y1, x0, x1 = content_box(padded)
    kp, _ = keypoints.features(padded)
    assert len(kp) > 10
    assert (kp[:, 0] >= x0).all() and (kp[:, 0] < x1).all() and (kp[:, 1] >= y0).all() and (kp[:, 1] < y1).all()
