"""Fine-tuning on images with a known answer: a bar's height gives the class."""

import numpy as np
import torch

from evaluation.finetune import FinetuneConfig, finetune
from evaluation.metrics import proba_scorer
from tests.evaluation.bars import bar_tensors as bars
from training.backbone import build_backbone


def test_finetuning_learns_a_visible_class_and_stays_at_chance_on_shuffled_labels():
    x, data = bars()
    fit, select, test = np.arange(0, 90), np.arange(90, 120), np.arange(120, 150)
    torch.manual_seed(0)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    cfg = FinetuneConfig(epochs=6, batch_size=16, lr=2e-3, crop_scale=(0.9, 1.0))
    score = proba_scorer("multiclass", 3)
    p = finetune(model, spec.embed_dim, x, data, fit, select, test, cfg, score, seed=0)
    assert p.proba.shape == (30, 3) and np.allclose(p.proba.sum(1), 1, atol=1e-5)
    assert (p.pred == data.labels[test]).mean() >= 0.9
    assert 1 <= p.chosen["epoch"] <= 6 and len(p.chosen["history"]) == 6
    shuffled = data.subset(np.arange(150))
    shuffled.labels = np.random.default_rng(3).permutation(data.labels)
    q = finetune(model, spec.embed_dim, x, shuffled, fit, select, test, cfg, score, seed=0)
    assert (q.pred == data.labels[test]).mean() < 0.6  # chance is 1/3; the real labels reach >= 0.9


def test_partial_finetuning_trains_only_the_last_blocks_and_leaves_the_given_backbone_untouched():
    x, data = bars(60)
    torch.manual_seed(0)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(epochs=1, batch_size=16, blocks=1)
    finetune(model, spec.embed_dim, x, data, np.arange(40), np.arange(40, 50), np.arange(50, 60), cfg,
             proba_scorer("multiclass", 3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy is trained
