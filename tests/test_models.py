"""Each model config builds a net with [N, 10] logits and the parameter count it states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mnist_lab.config import CONFIG_DIR
from mnist_lab.models import count_parameters
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
