"""Each model config builds a net with [N, 10] logits and the parameter count it states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from mnist_lab.models import count_parameters
from mnist_lab.paths import CONFIG_DIR
from tests.helpers import compose_cfg

MODEL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


def stated_parameters(name: str) -> int:
    text = (Path(CONFIG_DIR) / "model" / f"{name}.yaml").read_text()
    match = re.search(r"([\d,]+) parameters", text)
    assert match, f"conf/model/{name}.yaml must state its parameter count in a comment"
    return int(match.group(1).replace(",", ""))


def test_all_four_families_are_shipped():
    assert {"mlp", "mlp_large", "lenet", "cnn", "resnet"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_output_and_parameter_count(name):
    net = instantiate(compose_cfg([f"model={name}"]).model)
    assert count_parameters(net) == stated_parameters(name)
    x = torch.randn(5, 1, 28, 28)
    out = net(x)
    assert out.shape == (5, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()  # every parameter takes part in the forward pass
    assert all(p.grad is not None for p in net.parameters())


def test_tutorial_mlps_have_the_tutorial_layers():
    for name, widths in {"mlp": [784, 128, 64, 10], "mlp_large": [784, 512, 256, 10]}.items():
        net = instantiate(compose_cfg([f"model={name}"]).model)
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert [linears[0].in_features] + [m.out_features for m in linears] == widths


def test_widths_and_depth_are_configurable():
    small = instantiate(compose_cfg(["model=resnet", "model.blocks=[1,1]", "model.width=8"]).model)
    big = instantiate(compose_cfg(["model=resnet", "model.blocks=[3,3,3]"]).model)
    assert count_parameters(small) < count_parameters(big)
    assert big(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cnn = instantiate(compose_cfg(["model=cnn", "model.widths=[8,16]"]).model)
    assert cnn(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vit_and_rnn_families_are_shipped():
    assert {"vit", "rnn"} <= set(MODEL_CONFIGS)


def test_vit_tokens_follow_stem_and_patch_size():
    """Conv stem: 28 -> 14 -> 7 -> 4, one token per cell (mean-pooled, or a class token);
    plain ViT: patches."""
    hybrid = instantiate(compose_cfg(["model=vit"]).model)
    assert hybrid.vit.patch_embed.num_patches == 16 and hybrid.vit.cls_token is None  # avg
    strided = instantiate(compose_cfg(["model=vit", "model.stem_pool=false"]).model)
    assert strided.vit.patch_embed.num_patches == 16
    assert strided.stem[0].stride == (2, 2) and hybrid.stem[0].stride == (1, 1)
    plain = instantiate(
        compose_cfg(["model=vit", "model.stem_channels=[]", "model.patch_size=4"]).model
    )
    assert plain.vit.patch_embed.num_patches == 49 and len(plain.stem) == 0
    token = instantiate(compose_cfg(["model=vit", "model.global_pool=token"]).model)
    assert token.vit.cls_token is not None and token(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(
        InstantiationException, match=r"model\.patch_size=3 must divide the 4x4 grid"
    ):
        instantiate(compose_cfg(["model=vit", "model.patch_size=3"]).model)


def test_vit_position_embedding_and_class_token_are_not_decayed(tmp_path):
    from mnist_lab.training.module import build_module

    module = build_module(compose_cfg(["experiment=vit", "model.global_pool=token"], tmp_path))
    groups = {g["name"]: g for g in module.build_optimization(10)["optimizer"].param_groups}
    undecayed = {id(p) for p in groups["norm_bias"]["params"]}
    assert groups["norm_bias"]["weight_decay"] == 0.0 and groups["weights"]["weight_decay"] > 0
    assert id(module.net.vit.pos_embed) in undecayed and id(module.net.vit.cls_token) in undecayed
    assert id(module.net.vit.blocks[0].attn.qkv.weight) not in undecayed


@pytest.mark.parametrize("sequence", ["rows", "pixels", "permuted_pixels"])
def test_rnn_reads_the_image_as_a_sequence(sequence):
    net = instantiate(compose_cfg(["model=rnn", f"model.sequence={sequence}"]).model)
    x = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 1, 28, 28)
    steps = net.steps(x)
    assert steps.shape == ((2, 28, 28) if sequence == "rows" else (2, 784, 1))
    flat = x.reshape(2, 784)
    if sequence == "rows":
        assert torch.equal(steps[:, 3], x[:, 0, 3])  # step 3 is row 3
    elif sequence == "pixels":
        assert torch.equal(steps[..., 0], flat)  # scan order
    else:  # one fixed permutation of all 784 pixels, from the seed, kept in the state dict
        assert not torch.equal(steps[..., 0], flat)
        assert torch.equal(steps[..., 0].sort(dim=1).values, flat)
        again = instantiate(compose_cfg(["model=rnn", f"model.sequence={sequence}"]).model)
        other = instantiate(
            compose_cfg(
                ["model=rnn", f"model.sequence={sequence}", "model.permutation_seed=1"]
            ).model
        )
        assert torch.equal(again.order, net.order) and not torch.equal(other.order, net.order)
        assert torch.equal(net.state_dict()["order"], net.order)
    assert net(x / 1568).shape == (2, 10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("readout", ["mean", "last"])
def test_rnn_cells_and_readouts(cell, readout):
    overrides = [f"model.cell={cell}", f"model.readout={readout}", "model.bidirectional=false"]
    net = instantiate(compose_cfg(["model=rnn", *overrides, "model.num_layers=1"]).model)
    assert type(net.rnn).__name__ == cell.upper()
    out = net(torch.randn(3, 1, 28, 28))
    out.sum().backward()
    assert out.shape == (3, 10) and all(p.grad is not None for p in net.parameters())
    with pytest.raises(
        InstantiationException, match=r"model\.cell='transformer': choose one of lstm, gru"
    ):
        instantiate(compose_cfg(["model=rnn", "model.cell=transformer"]).model)


@pytest.mark.parametrize(
    ("model", "traits"),
    [("cnn", (True, True)), ("vit", (False, True)), ("rnn", (True, False)), ("mlp", (True, False))],
)
def test_auto_knows_each_family(model, traits):
    """What `auto` resolves per family: bf16 only where it speeds the net up on a native-bf16
    CPU (not the ViT), channels_last only for nets with convolutions."""
    from mnist_lab.training.hardware import net_traits, resolve_channels_last, resolve_precision

    cfg = compose_cfg([f"model={model}"])
    assert net_traits(cfg.model) == traits
    bf16_pays, convs = traits
    if not bf16_pays:
        assert resolve_precision("auto", "cpu", bf16_pays) == "32"
    assert resolve_channels_last("auto", "32", "cpu", convs) is convs


def test_domain_batchnorm_keeps_the_degraded_half_out_of_the_clean_statistics():
    """model.domain_bn (AdvProp's auxiliary BN): in training the batch's first half (the
    degraded twins) is normalised by ``aux``, the second by the main BN, whose running
    statistics see the clean half only; evaluation is a plain BatchNorm2d with the main's state."""
    from mnist_lab.models.cnn import CNN, DomainBatchNorm2d

    torch.manual_seed(0)
    bn, ref = DomainBatchNorm2d(4), torch.nn.BatchNorm2d(4)
    degraded, clean = torch.randn(6, 4, 5, 5) * 5 + 3, torch.randn(6, 4, 5, 5)
    out = bn.train()(torch.cat([degraded, clean]))
    assert torch.allclose(out[6:], ref.train()(clean), atol=1e-5)
    assert torch.allclose(bn.running_mean, ref.running_mean) and bn.aux.running_mean.mean() > 0.2
    assert torch.allclose(bn.eval()(degraded), ref.eval()(degraded), atol=1e-5)
    net = CNN(widths=[8, 16], convs_per_stage=1, domain_bn=True, pool_first=True)
    assert sum(isinstance(m, DomainBatchNorm2d) for m in net.modules()) == 2
    assert net.train()(torch.randn(4, 1, 28, 28)).shape == (4, 10)
