"""The backbone factory: named DINOv3 ViTs, local checkpoints only, RGB folded to grey, clear errors."""

import pytest
import torch

from training.backbone import VARIANTS, CheckpointError, build_backbone, export_backbone, load_exported


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", *VARIANTS])
def test_factory_builds_grey_dinov3_vits_with_model_preprocessing(name):
    model, spec, report = build_backbone(name, in_chans=1, img_size=64)
    assert report is None and spec.in_chans == 1
    assert model.patch_embed.proj.weight.shape[1] == 1
    assert len(spec.mean) == 1 and 0 < spec.mean[0] < 1 and 0 < spec.std[0] < 1  # from timm's config
    cls = model.forward_features(torch.zeros(2, 1, 64, 64))[:, 0]
    assert cls.shape == (2, spec.embed_dim)


@pytest.mark.slow
@pytest.mark.parametrize("name, dim", [("vit_base_patch16_dinov3", 768), ("vit_large_patch16_dinov3", 1024)])
def test_factory_builds_the_large_dinov3_vits_offline(name, dim):
    _, spec, _ = build_backbone(name, img_size=224)
    assert spec.embed_dim == dim and spec.patch_size == 16


def _meta_style_state(model) -> dict:
    """A DINOv3 checkpoint as Meta publishes it: storage_tokens, ls1.gamma, RGB patch embedding, mask_token."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v.clone()
    w = out["patch_embed.proj.weight"]
    out["patch_embed.proj.weight"] = torch.cat([w / 3, w / 3, w / 3], dim=1)
    out["mask_token"] = torch.zeros(1, w.shape[0])
    out["rope_embed.periods"] = torch.ones(4)
    return out


def test_meta_dinov3_pth_maps_keys_and_folds_rgb(tmp_path):
    torch.manual_seed(0)
    source, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    path = tmp_path / "dinov3_vitp.pth"
    torch.save(_meta_style_state(source), path)
    model, _, report = build_backbone("vit_pico_patch8_dinov3", img_size=32, init=path)
    assert report.folded_channels and not report.missing
    for k, v in source.state_dict().items():
        assert torch.allclose(model.state_dict()[k], v, atol=1e-6), k
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(model.forward_features(x), source.forward_features(x), atol=1e-5)


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path):
    other, _, _ = build_backbone("vit_tiny_patch8_dinov3", img_size=32)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="another architecture") as e:
        build_backbone("vit_pico_patch8_dinov3", img_size=32, init=path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("vit_pico_patch8_dinov3", init=tmp_path / "absent.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        build_backbone("vit_pico_patch8_dinov3", init=tmp_path / "junk.pth")


def test_exported_backbone_loads_in_timm_and_back(tmp_path):
    import timm

    torch.manual_seed(1)
    model, spec, _ = build_backbone("vit_pico_patch8_dinov3", img_size=32)
    path = export_backbone(model, spec, tmp_path / "backbone.safetensors")
    x = torch.rand(1, 1, 32, 32)
    again, spec2 = load_exported(path)
    assert spec2 == spec
    assert torch.allclose(again.forward_features(x), model.forward_features(x), atol=1e-6)
    plain = timm.create_model(spec.timm_name, pretrained=True, num_classes=0, in_chans=1, img_size=32,
                              pretrained_cfg_overlay={"file": str(path)}, **spec.kwargs)
    assert torch.allclose(plain.forward_features(x), model.forward_features(x), atol=1e-6)
