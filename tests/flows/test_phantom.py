"""The demo data is a function of its seed: two trees drawn alike are the same bytes, file for file."""

import hashlib

from flows.phantom import write_phantom


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_seed_draws_the_same_tree(tmp_path):
    a = digest(write_phantom(tmp_path / "a", seed=4, n_patients=2, hips=True))
    b = digest(write_phantom(tmp_path / "b", seed=4, n_patients=2, hips=True))
    assert len(a) > 20 and any(k.endswith(".dcm") for k in a)
    assert a == b
    assert digest(write_phantom(tmp_path / "c", seed=5, n_patients=2, hips=True)) != a
