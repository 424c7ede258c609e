"""Each loss against a small case computed by hand, and the whole objective learning on a fixed batch."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.centering import TeacherTargets, sinkhorn_knopp
from training.losses import dino_loss, gram_loss, ibot_loss, koleo_loss


def test_dino_loss_skips_same_view_pairs_and_averages_the_rest():
    # one image, two global crops + one local; K = 2
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher targets for global crops 0 and 1
    s = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]))  # log-probs as logits, temp 1
    # pairs (t0,s1) (t0,s2) (t1,s0) (t1,s2): -log .2, -log .5, -log .1, -log .5
    expected = (-math.log(0.2) - math.log(0.5) - math.log(0.1) - math.log(0.5)) / 4
    assert dino_loss(s, t, n_global=2, student_temp=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_dino_loss_applies_the_student_temperature():
    t = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = F.log_softmax(torch.tensor([10.0, 0.0]), 0)  # temp 0.1
    assert dino_loss(s, t, 2, 0.1).item() == pytest.approx(-(0.5 * p).sum().item(), rel=1e-6)


def test_ibot_loss_weighs_every_image_equally():
    masks = torch.tensor([[True, False, False], [True, True, True]])  # 1 masked patch, then 3
    t = torch.tensor([[1.0, 0.0]] * 4)
    s = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.25, 0.75], [0.25, 0.75]]))
    expected = (-math.log(0.5) + (-math.log(0.25))) / 2  # image means, then mean over images
    assert ibot_loss(s, t, masks, student_temp=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_ibot_loss_is_zero_without_masks():
    assert ibot_loss(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_koleo_is_minus_mean_log_nearest_neighbour_distance():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # nearest distances: sqrt(2), sqrt(2), sqrt(2)
    assert koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    spread = koleo_loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    bunched = koleo_loss(torch.tensor([[1.0, 0.0], [1.0, 0.01]]))
    assert bunched > spread


def test_gram_loss_is_zero_for_a_rescaled_copy_and_counts_entries():
    a = torch.randn(2, 5, 8)
    assert gram_loss(a * 3.0, a).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # Gram(s) = I, Gram(t) = all ones: off-diagonals differ by 1 -> mean of [0,1,1,0]
    assert gram_loss(s, t).item() == pytest.approx(0.5)


def test_centering_subtracts_the_running_mean_and_sharpens():
    targets = TeacherTargets(2, "center", momentum=0.5)
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    p = targets(logits, temp=1.0)
    assert torch.allclose(p, F.softmax(logits, -1))  # centre starts at 0
    assert torch.allclose(targets.center, torch.tensor([[1.0, 0.0]]))  # 0.5 * 0 + 0.5 * mean
    p2 = targets(logits, temp=1.0)
    assert torch.allclose(p2, F.softmax(logits - torch.tensor([1.0, 0.0]), -1))


def test_sinkhorn_equipartitions_prototypes():
    torch.manual_seed(0)
    q = sinkhorn_knopp(torch.randn(64, 8), temp=1.0, iters=20)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), rtol=0.05)


def test_total_loss_decreases_on_a_fixed_batch(tiny_cfg):
    from training.distributed import setup_distributed
    from training.schedules import build_schedules
    from training.step import train_step
    from training.trainer import build_learner

    torch.manual_seed(0)
    cfg = tiny_cfg(["optim.lr=1e-3", "optim.warmup_steps=0", "optim.schedule=constant", "train.steps=40",
                    "optim.weight_decay=0.0", "optim.weight_decay_end=0.0", "loss.teacher_temp_warmup_steps=0",
                    "optim.momentum_teacher=0.9", "optim.momentum_teacher_end=0.9"])
    learner, _ = build_learner(cfg, setup_distributed("cpu"))
    g = torch.randn(8, 1, 32, 32)
    batch = {"global": g, "local": torch.randn(8, 1, 16, 16),
             "masks": torch.rand(8, 16) < 0.3}
    schedules = build_schedules(cfg)
    losses = [train_step(learner, batch, step, schedules)["loss"] for step in range(40)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_collapse_watch_warns_on_a_fall_not_on_the_layer_scale_start():
    from training.metrics import CollapseWatch

    ok = {"teacher_batch_entropy": 0.9}
    watch = CollapseWatch(min_std=0.2, min_batch_entropy=0.05, grace_steps=5, patience=50)
    assert watch.check(1, {**ok, "cls_std": 0.0}) == []  # every image starts alike
    assert watch.check(10, {**ok, "cls_std": 0.8}) == []
    assert "collapsing" in watch.check(20, {**ok, "cls_std": 0.05})[0]
    assert watch.check(21, {**ok, "cls_std": 0.01}) == []  # once per kind
    assert "collapse" in watch.check(22, {"teacher_batch_entropy": 0.01, "cls_std": 0.8})[0]
    never = CollapseWatch(0.2, 0.05, grace_steps=5, patience=50)
    assert never.check(49, {**ok, "cls_std": 0.01}) == [] and never.check(50, {**ok, "cls_std": 0.01})


def test_collapse_watch_names_the_uniform_plateau_dino_sat_on():
    """The collapse measured with cpu-tiny: loss = ln K and teacher entropy 1.0 of log K, features still spread."""
    from training.metrics import CollapseWatch

    k = 4096
    plateau = {"teacher_entropy": 0.9999, "teacher_batch_entropy": 1.0, "cls_std": 0.83,
               "dino": math.log(k) - 0.001, "ibot": 0.99 * math.log(k)}
    learning = {**plateau, "teacher_entropy": 0.62, "dino": 5.1, "ibot": 6.0}
    watch = CollapseWatch(0.2, 0.05, grace_steps=60, patience=300, prototypes=k, ibot_prototypes=k)
    assert watch.check(10, plateau) == []  # every run starts on the plateau
    assert watch.check(50, learning) == []
    messages = watch.check(110, plateau)  # back on it after having left it: a collapse
    assert [m.split(" head")[0] for m in messages] == ["step 110: the DINO", "step 110: the iBOT"]
    assert "ln 4096" in messages[0] and "1.000 x" in messages[0]
    assert sorted(watch.warned) == ["ibot_uniform", "uniform"]
    assert watch.check(120, plateau) == []  # once per kind

    stuck = CollapseWatch(0.2, 0.05, grace_steps=60, patience=300, prototypes=k, ibot_prototypes=k)
    assert stuck.check(290, plateau) == []  # never left it, but the run is young
    assert len(stuck.check(300, plateau)) == 2
    sharp = CollapseWatch(0.2, 0.05, grace_steps=60, patience=300, prototypes=k, ibot_prototypes=k)
    assert sharp.check(400, {**plateau, "teacher_entropy": 0.5}) == []  # a sharp teacher is not uniform


def test_dino_loss_matches_a_reference_over_every_crop_pair():
    """Against a plain loop over images and crop pairs (values on fixed random tensors, not shapes)."""
    g = torch.Generator().manual_seed(3)
    batch, n_global, n_local, k, temp = 3, 2, 3, 7, 0.1
    student = torch.randn((n_global + n_local) * batch, k, generator=g)
    teacher = F.softmax(torch.randn(n_global * batch, k, generator=g) / 0.04, dim=-1)
    total, pairs = 0.0, 0
    for i in range(n_global):
        for j in range(n_global + n_local):
            if i == j:
                continue
            for b in range(batch):
                t = teacher[i * batch + b]
                logp = F.log_softmax(student[j * batch + b] / temp, dim=-1)
                total += float(-(t * logp).sum()) / batch
            pairs += 1
    assert dino_loss(student, teacher, n_global, temp).item() == pytest.approx(total / pairs, rel=1e-5)


def test_uniform_targets_and_a_uniform_student_give_ln_k():
    k = 4096
    uniform = torch.full((4, k), 1.0 / k)
    assert dino_loss(torch.zeros(6, k), uniform, n_global=2).item() == pytest.approx(math.log(k), rel=1e-5)
    masks = torch.tensor([[True, False], [True, True]])
    assert ibot_loss(torch.zeros(3, k), uniform[:3], masks).item() == pytest.approx(math.log(k), rel=1e-5)
