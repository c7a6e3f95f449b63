"""Method contract (STYLE.md §3/§8): one CPU step per registered method, gradients, teachers, state."""

from __future__ import annotations

import pytest
import torch

from arco.methods import METHOD_CONFIGS, METHODS, Batch, Method, ModelConfig
from arco.models import RepresentationHead

SMALL = {
    "supervised": {},
    "arco-pretrain": {"queue_size": 4},
    "arco-finetune": {
        "num_queries": 16,
        "num_negatives": 16,
        "bank_size": 32,
        "nn_bank": 8,
        "nn_k": 2,
        "confidence": 0.0,
    },
}


def build(name: str, spatial_dims: int = 2, **over):
    model = ModelConfig(arch="unet" if spatial_dims == 2 else "vnet", dim=8, hidden_dim=8, n_filters=4)
    cfg = METHOD_CONFIGS[name](**{**SMALL[name], **over})
    torch.manual_seed(0)
    m = METHODS.build(name, cfg=cfg, num_classes=3, spatial_dims=spatial_dims, model=model)
    m.setup(torch.device("cpu"), 0)
    m.train(True)
    return m


def batch(spatial_dims: int = 2, b: int = 2) -> Batch:
    g = torch.Generator().manual_seed(1)
    s = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    return Batch(
        torch.randn(b, 1, *s, generator=g),
        torch.randint(0, 3, (b, *s), generator=g),
        torch.randn(b, 1, *s, generator=g),
    )


def test_registry_lists_the_three_methods():
    assert METHODS.names() == ["arco-finetune", "arco-pretrain", "supervised"]
    with pytest.raises(ValueError, match="did you mean 'supervised'"):
        METHODS.get("supervise")


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(METHOD_CONFIGS))
def test_one_step_finite_loss_gradients_and_frozen_teachers(name, spatial_dims):
    m = build(name, spatial_dims)
    assert isinstance(m, Method)
    out = m.training_step(batch(spatial_dims), 0)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values())
    out.loss.backward()
    trainable = {id(p) for g in m.param_groups() for p in g["params"]}
    for mod_name, mod in m.modules().items():
        for pname, p in mod.named_parameters():
            if id(p) in trainable:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{mod_name}.{pname} got no gradient"
            else:
                assert mod_name.startswith("teacher"), f"{mod_name}.{pname} is not optimised"
                assert not p.requires_grad and p.grad is None, f"teacher {mod_name}.{pname} got a gradient"
    for mod_name, mod in m.modules().items():
        if mod_name.startswith("teacher"):
            assert not mod.training, f"{mod_name} must stay in eval mode"


@pytest.mark.parametrize("name", ["arco-pretrain", "arco-finetune"])
def test_after_step_moves_teacher_towards_student(name):
    m = build(name)
    teacher = m.modules()["teacher"]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    out = m.training_step(batch(), 0)
    opt = torch.optim.SGD(m.param_groups(), lr=0.1)
    out.loss.backward()
    opt.step()
    m.after_optimizer_step(0)
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_finetune_never_runs_a_dense_representation_head(monkeypatch):
    def dense(*_a, **_k):
        raise AssertionError("dense full-resolution representation head called in training")

    monkeypatch.setattr(RepresentationHead, "forward", dense)
    m = build("arco-finetune")
    out = m.training_step(batch(), 0)
    assert torch.isfinite(out.loss)


def test_finetune_contrast_sees_only_confident_pseudo_labels():
    # With an unreachable threshold no unlabeled pixel is valid: L_unsup is exactly 0.
    m = build("arco-finetune", confidence=1.01)
    out = m.training_step(batch(), 0)
    assert float(out.logs["loss_unsup"]) == 0.0 and float(out.logs["confident"]) == 0.0


def test_finetune_head_gets_the_draw_validity(monkeypatch):
    # Placeholder draws (short or absent classes) must reach the head as invalid rows, for student and teacher.
    seen = []
    original = RepresentationHead.forward_at

    def spy(self, features, index, spatial_shape, valid=None):
        seen.append((self.training, None if valid is None else (valid.dtype, tuple(valid.shape))))
        return original(self, features, index, spatial_shape, valid)

    monkeypatch.setattr(RepresentationHead, "forward_at", spy)
    m = build("arco-finetune")
    m.training_step(batch(), 0)
    n = 3 * SMALL["arco-finetune"]["num_queries"]
    assert seen == [(True, (torch.bool, (n,))), (False, (torch.bool, (n,)))]


def test_generator_state_round_trip():
    m = build("arco-finetune")
    state = m.state_dict()
    a = torch.rand(3, generator=m.generator)
    m.load_state_dict(state)
    assert torch.equal(torch.rand(3, generator=m.generator), a)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        METHODS.build(
            "supervised",
            cfg=METHOD_CONFIGS["supervised"](),
            num_classes=1,
            spatial_dims=2,
            model=ModelConfig(),
        )
    with pytest.raises(ValueError, match="3D network but the data is 2D"):
        METHODS.build(
            "supervised",
            cfg=METHOD_CONFIGS["supervised"](),
            num_classes=2,
            spatial_dims=2,
            model=ModelConfig(arch="vnet"),
        )
