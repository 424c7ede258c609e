"""The CNN family beside the DINOv3 ViTs: one interface for pretraining and evaluation (the CPU-scale recipe)."""

import pytest
import torch

from training.backbone import (CheckpointError, backbone_depth, build_backbone, export_backbone, forward_tokens,
                               load_exported)
from training.config import ConfigError, load_config

SMALL_CNN = ["model.name=regnetx_002", "loss.ibot_weight=0", "head.prototypes=64", "head.hidden_dim=64",
             "head.bottleneck_dim=32", "crops.global_size=64", "crops.local_size=32", "crops.local_crops=2",
             "optim.batch_size=8", "optim.warmup_steps=2", "optim.layer_decay=1.0",
             "loss.teacher_temp_warmup_steps=2", "train.log_every=1", "train.num_workers=0",
             "train.tensorboard=false", "train.shuffle_buffer=20", "model.drop_path=0.0"]


def test_a_cnn_gives_its_average_pool_as_cls_and_its_feature_map_as_patches():
    model, spec, _ = build_backbone("regnetx_002", 1, 128)
    assert (spec.family, spec.patch_size, spec.embed_dim, spec.num_prefix_tokens) == ("cnn", 32, 368, 0)
    assert backbone_depth(model) == 0
    x = torch.randn(3, 1, 128, 128)
    cls, patches = forward_tokens(model.eval(), x)
    assert patches.shape == (3, 16, 368)  # a 4 x 4 map at stride 32
    assert torch.allclose(cls, patches.mean(1))
    assert torch.allclose(cls, model(x), atol=1e-5)  # timm's own pooled output
    with pytest.raises(CheckpointError, match="iBOT masking needs a ViT"):
        forward_tokens(model, x, torch.zeros(3, 16, dtype=torch.bool), torch.zeros(368))


def test_a_vit_of_another_family_is_refused_by_name():
    with pytest.raises(CheckpointError, match="neither a DINOv3 ViT .* nor a CNN"):
        build_backbone("vit_small_patch16_224", 1, 128)


def test_an_exported_cnn_comes_back_with_its_spec_and_weights(tmp_path):
    model, spec, _ = build_backbone("regnetx_002", 1, 96)
    with torch.no_grad():  # non-trivial batch-norm statistics, which the export must carry
        model.train()(torch.randn(8, 1, 96, 96) * 3 + 1)
    export_backbone(model, spec, tmp_path / "backbone.safetensors")
    again, spec2 = load_exported(tmp_path / "backbone.safetensors")
    assert spec2 == spec and spec2.family == "cnn"
    x = torch.randn(2, 1, 96, 96)
    assert torch.equal(forward_tokens(model.eval(), x)[0], forward_tokens(again.eval(), x)[0])


def test_an_rgb_cnn_checkpoint_is_folded_to_one_grey_channel(tmp_path):
    import timm

    rgb = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()  # a classifier head: ignored
    torch.save(rgb.state_dict(), tmp_path / "imagenet.pth")
    grey, _, report = build_backbone("resnet10t", 1, 64, init=tmp_path / "imagenet.pth")
    assert report.folded_channels and not report.missing
    x = torch.rand(2, 1, 64, 64)
    expected = rgb.forward_features(x.expand(-1, 3, -1, -1))  # a grey image is R = G = B
    assert torch.allclose(grey.eval().forward_features(x), expected, atol=1e-4)
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="another architecture"):
        build_backbone("resnet10t", 1, 64, init=tmp_path / "other.pth")


def test_ibot_with_a_cnn_is_refused_before_training():
    from training.model import build_ssl_models

    cfg = load_config("cpu-small", ["loss.ibot_weight=1.0"])
    with pytest.raises(ConfigError, match="iBOT's masked-token loss needs a ViT; regnetx_002 is a CNN"):
        build_ssl_models(cfg, 64)
    student, teacher, _ = build_ssl_models(load_config("cpu-small"), 64)
    assert student.ibot_head is None and student.mask_token is None  # nothing that never gets a gradient


def test_the_teacher_normalises_with_its_batch_statistics():
    """A CNN's pooled features share one large component across images; a teacher normalising with running
    statistics keeps it and its targets start uniform (measured on real knees: Sinkhorn entropy 0.995 of log K at
    init against 0.76 with batch statistics and batch norm in the head). The teacher's norms use each batch, and
    their running statistics follow the teacher's own batches, ready for the exported backbone."""
    from training.model import build_ssl_models

    student, teacher, _ = build_ssl_models(load_config(None, SMALL_CNN + ["head.batch_norm=true"]), 64)
    norms = [m for m in teacher.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.training for m in norms) and not teacher.backbone.training
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in teacher.dino_head.modules())
    x = torch.randn(8, 1, 64, 64) * 2 + 3
    before = teacher.backbone.stem.bn.running_mean.clone()
    out = teacher.teacher_forward(x, None)["cls_logits"]
    assert not torch.equal(teacher.backbone.stem.bn.running_mean, before)
    # batch statistics: one image's targets depend on the others in its batch
    assert not torch.allclose(teacher.teacher_forward(x[:4], None)["cls_logits"], out[:4], atol=1e-4)


@pytest.mark.slow
def test_a_short_cnn_pretraining_stays_off_the_uniform_plateau(tmp_path, phantom_manifest):
    """The recipe's guard against collapse (Sinkhorn-Knopp targets, few prototypes, KoLeo): after a short real
    run, the teacher's per-image entropy is clearly below its maximum (a uniform output is 1.0 of log K), and the
    trainer flagged no collapse."""
    from training.metrics import read_metrics
    from training.trainer import run_pretraining

    _, manifest = phantom_manifest
    steps = 40
    summary = run_pretraining(manifest, "cpu-small", SMALL_CNN[1:] + [f"train.steps={steps}", "optim.batch_size=16",
                                                                     "train.checkpoint_every=40",
                                                                     "train.precision=fp32"],
                              tmp_path / "run", show_progress=False)
    rows = read_metrics(tmp_path / "run")
    assert summary["steps"] == steps and "ibot" not in rows[-1]
    late = [r["teacher_entropy"] for r in rows[-10:]]
    assert max(late) < 0.9, late
    assert not summary.get("collapse")
    model, spec = load_exported(tmp_path / "run" / "backbone.safetensors")
    assert spec.family == "cnn" and spec.name == "regnetx_002"
