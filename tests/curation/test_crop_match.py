"""The crop search (curation/dedup/crop_match.py): trimmed re-exports found, different images never joined."""

import numpy as np
from PIL import Image

from curation.dedup import crop_match, descriptor_votes, keypoints
from curation.dedup.config import CropConfig, DedupConfig
from curation.dedup.groups import METHODS
from curation.dedup.search import dup_graph


def textured(seed: int, size: int = 256) -> np.ndarray:
    """A 12-bit image with broad shapes and fine texture of its own, like a radiograph's bone."""
    rng = np.random.default_rng(seed)
    coarse = np.asarray(Image.fromarray(rng.normal(0, 1, (8, 8)).astype(np.float32), mode="F")
                        .resize((size, size), Image.BICUBIC))
    fine = np.asarray(Image.fromarray(rng.normal(0, 1, (size // 2, size // 2)).astype(np.float32), mode="F")
                      .resize((size, size), Image.BICUBIC))
    return np.clip(2000 + 600 * coarse + 250 * fine, 0, 4095).astype(np.uint16)


def trimmed(a: np.ndarray, frac: float, ox: float, oy: float, out_size: int | None = None) -> np.ndarray:
    """Keep `frac` of each side at offset (ox, oy) in [0, 1], optionally resized; 8 bits."""
    h, w = a.shape
    ch, cw = round(h * frac), round(w * frac)
    y0, x0 = round((h - ch) * oy), round((w - cw) * ox)
    part = Image.fromarray(a[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32), mode="F")
    if out_size:
        part = part.resize((out_size, out_size), Image.BICUBIC)
    return (np.clip(np.asarray(part), 0, 4095) / 16).astype(np.uint8)


def search(images: list[np.ndarray], skip=None, cfg: CropConfig = CropConfig()):
    feats = [keypoints.features(a) for a in images]
    kp = np.concatenate([k for k, _ in feats])
    desc = np.concatenate([d for _, d in feats])
    sizes = np.array([len(k) for k, _ in feats])
    skip = skip or (lambda a, b: np.zeros(len(a), bool))
    return crop_match.crop_edges(kp, desc, sizes, skip, lambda i: images[i], cfg)


def test_trimmed_resized_and_8_bit_copies_are_found_and_nothing_else():
    originals = [textured(s) for s in range(10)]
    copies = [trimmed(originals[0], 0.90, 0.2, 0.8), trimmed(originals[3], 0.94, 1.0, 0.0, out_size=256),
              trimmed(originals[7], 0.88, 0.5, 0.5, out_size=160)]
    edges, counts = search(originals + copies)
    assert sorted((e.a, e.b) for e in edges) == [(0, 10), (3, 11), (7, 12)]
    assert all(e.similarity > CropConfig().threshold + 0.2 for e in edges)
    assert counts["verified"] == 3 and counts["candidates"] >= 3 and counts["votes"] > 0


def test_transform_recovers_the_crop_geometry():
    a = textured(1)
    b = trimmed(a, 0.9, 0.0, 1.0, out_size=256)  # rows 26..256, cols 0..230 of a, enlarged by 256/230
    (ka, da), (kb, db) = keypoints.features(a), keypoints.features(b)
    sims = keypoints.unit(da) @ keypoints.unit(db).T
    i, j = np.nonzero(sims >= 0.9)
    mat = crop_match.transform(ka[i, :2], kb[j, :2], CropConfig(), tol_px=3)
    assert mat is not None
    assert abs(np.hypot(mat[0, 0], mat[1, 0]) - 256 / 230) < 0.02  # the scale of the resize
    # a's pixel (0, 26) is b's top-left corner
    assert np.allclose(mat @ np.array([0.0, 26.0, 1.0]), [0, 0], atol=2.0)


def test_skipped_pairs_are_not_checked():
    a = textured(2)
    edges, counts = search([a, trimmed(a, 0.9, 0.5, 0.5)], skip=lambda x, y: np.ones(len(x), bool))
    assert edges == [] and counts["candidates"] == 0


def test_images_without_features():
    for pixels in (np.zeros((1, 1), np.uint8), np.full((64, 64), 7, np.uint16), np.zeros((4, 4000), np.uint8)):
        kp, desc = keypoints.features(pixels)
        assert kp.shape == (0, 4) and desc.shape == (0, keypoints.DESC)
    edges, counts = search([np.zeros((64, 64), np.uint8), np.zeros((1, 1), np.uint8)])
    assert edges == [] and counts["descriptors"] == 0


def test_crop_edges_join_groups_and_keep_the_global_match():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 256)).astype(np.float32)
    emb[1] = emb[0] + rng.normal(0, 0.1, 256)  # 0 and 1 match globally
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    lat = ["L", "L", "R", None]
    graph = dup_graph(emb.astype(np.float16), emb[:, ::-1].astype(np.float16), lat, [None] * 4, DedupConfig())
    assert list(graph.group) == [0, 0, 2, 3]
    a, b = np.array([0, 0, 1]), np.array([1, 2, 3])
    assert graph.apart_from_crop(a, b).tolist() == [True, True, False]  # same group; left against right
    graph.add_edges([(1, 3, 0.8)], method=METHODS.index("crop"))
    assert list(graph.group) == [0, 0, 2, 0]
    assert METHODS[graph.best_method[3]] == "crop" and graph.best_other[3] == 1
    assert METHODS[graph.best_method[1]] == "embedding" and graph.best_other[1] == 0  # kept


def test_approximate_vote_search_finds_what_the_exact_one_finds():
    rng = np.random.default_rng(5)
    n = 1500  # images, 24 descriptors each: 36,000, past the exact search's limit when it is set low
    base = rng.dirichlet(np.full(keypoints.DESC, 0.3), n * keypoints.KEYPOINTS).astype(np.float32) ** 0.5
    base[keypoints.KEYPOINTS * 100 : keypoints.KEYPOINTS * 200] = base[: keypoints.KEYPOINTS * 100] + rng.normal(
        0, 0.02, (keypoints.KEYPOINTS * 100, keypoints.DESC))  # images 100-199 re-use the descriptors of 0-99
    desc = np.round(255 * np.abs(base) / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.uint8)
    owner = np.repeat(np.arange(n), keypoints.KEYPOINTS)
    exact = descriptor_votes.votes(desc, owner, CropConfig(exact_below=10**9))
    approx = descriptor_votes.votes(desc, owner, CropConfig(exact_below=0))
    pairs = lambda v: set(zip(v[0].tolist(), v[1].tolist()))  # noqa: E731
    assert len(pairs(exact)) >= 100 * keypoints.KEYPOINTS * 0.9
    assert pairs(approx) <= pairs(exact)  # re-scored exactly: nothing the exact search rejects
    assert len(pairs(approx)) >= 0.95 * len(pairs(exact))
    assert {(int(owner[q]), int(owner[j])) for q, j in pairs(approx)} == {(i, i + 100) for i in range(100)}


def test_large_images_are_matched_on_their_reduced_versions():
    originals = [textured(s, size=768) for s in range(20, 26)]
    copies = [trimmed(originals[1], 0.92, 0.3, 0.6), trimmed(originals[4], 0.9, 1.0, 1.0, out_size=300)]
    assert max(keypoints.features(originals[0])[0][:, :2].max(0)) > 600  # positions in stored pixels
    edges, _ = search(originals + copies)
    assert sorted((e.a, e.b) for e in edges) == [(1, 6), (4, 7)]
