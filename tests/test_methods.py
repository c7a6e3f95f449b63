"""Method contract (docs/design.md), run over every registered method, and ARCO's objective as defined."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _tiny import params_for
from arco._checks import ConfigError
from arco.methods import Batch, Method, ModelConfig, build_method, get_method, get_recipe, list_methods


def build(name: str, spatial_dims: int = 2, **over):
    model = ModelConfig(arch="unet" if spatial_dims == 2 else "vnet", dim=8, hidden_dim=8, n_filters=4)
    torch.manual_seed(0)
    m = build_method(name, params_for(name, **over), 3, spatial_dims, model)
    m.setup(torch.device("cpu"), 0, 100)
    m.set_training(True)
    return m


def batch(spatial_dims: int = 2, b: int = 2, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    return Batch(
        torch.randn(b, 1, *s, generator=g),
        torch.randint(0, 3, (b, *s), generator=g),
        torch.randn(b, 1, *s, generator=g),
    )


def sgd_step(m, b: Batch, it: int = 0, lr: float = 0.1):
    out = m.training_step(b, it)
    opt = torch.optim.SGD(m.param_groups(), lr=lr)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    m.after_optimizer_step(it)
    return out


# ------------------------------------------------------------------------------------------------ registry
def test_registry_holds_the_built_in_methods_and_recipes():
    assert {"supervised", "arco-pretrain", "arco-finetune"} <= set(list_methods(kind="method"))
    assert {"arco", "arco-ns", "arco-sag", "supervised"} <= set(list_methods())
    assert [s.method for s in get_recipe("arco").stages] == ["arco-pretrain", "arco-finetune"]
    assert dict(get_recipe("arco-ns").stages[1].params) == {"sampler": "ns"}
    with pytest.raises(ConfigError, match="did you mean 'supervised'"):
        get_method("supervise")


@pytest.mark.parametrize("name", list_methods(kind="method"))
def test_every_method_declares_what_the_engine_reads(name):
    cls = get_method(name)
    assert cls.description and cls.paper and cls.loss_names and cls.loss_names[0].startswith("loss")
    assert all(n.startswith("loss_") for n in cls.loss_names)
    m = build(name, cls.spatial_dims[0])
    assert isinstance(m, Method)
    assert m.segmenter in m.components() and set(cls.init_components) <= set(m.components())
    assert m.segmentation_spec()["arch"] in ("unet", "vnet")


# ------------------------------------------------------------------------------------- contract, every method
# Every registered method in every dimension it declares (a 2D-only method has no 3D case to skip).
_CASES = [(name, dims) for name in list_methods(kind="method") for dims in get_method(name).spatial_dims]


@pytest.mark.parametrize(("name", "spatial_dims"), _CASES)
def test_one_step_finite_loss_gradients_and_frozen_teachers(name, spatial_dims):
    m = build(name, spatial_dims)
    # 3D: four images, so methods that forward half a batch (BCP) keep > 1 value per channel at the 1^3 bottleneck
    out = m.training_step(batch(spatial_dims, b=2 if spatial_dims == 2 else 4), 0)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert set(out.logs) <= {*m.loss_names, *m.metric_names}
    assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values())
    out.loss.backward()
    trainable = {id(p) for g in m.param_groups() for p in g["params"]}
    frozen = {t for t, _ in m.ema_pairs}
    for mod_name, mod in m.components().items():
        for pname, p in mod.named_parameters():
            if id(p) in trainable:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{mod_name}.{pname} got no gradient"
            else:
                # Not optimised: a teacher's, or a part the method holds fixed (GCL's frozen encoder); never trainable.
                assert mod_name in frozen or not p.requires_grad, f"{mod_name}.{pname} is neither optimised nor fixed"
                assert not p.requires_grad and p.grad is None, f"fixed {mod_name}.{pname} got a gradient"
    for t in frozen:
        assert not m.components()[t].training, f"{t} must stay in eval mode"


@pytest.mark.parametrize("name", list_methods(kind="method"))
def test_generator_state_round_trip(name):
    m = build(name, get_method(name).spatial_dims[0])
    state = m.method_state()
    a = torch.rand(3, generator=m.generator)
    m.load_method_state(state)
    assert torch.equal(torch.rand(3, generator=m.generator), a)


# ------------------------------------------------------------------------------------- ARCO, as defined
@pytest.mark.parametrize("name", ["arco-pretrain", "arco-finetune"])
def test_ema_momentum_on_every_teacher_student_pair(name):
    m = build(name)
    pairs = m.ema_pairs
    # backbone, global projector and each stage's own heads are all kept as EMA teachers
    students = {s for _, s in pairs}
    assert {"student", "projector"} <= students
    assert ("rep_head" in students) if name == "arco-finetune" else ("local_projector" in students)
    before = {t: {k: v.clone() for k, v in m.components()[t].state_dict().items()} for t, _ in pairs}
    sgd_step(m, batch())
    momentum = m.cfg.ema
    for t, s in pairs:
        t_state, s_state = m.components()[t].state_dict(), m.components()[s].state_dict()
        for k, v in t_state.items():
            if v.is_floating_point():
                expected = momentum * before[t][k] + (1 - momentum) * s_state[k]
                assert torch.allclose(v, expected, atol=1e-6), f"{t}.{k} is not the EMA of {s}.{k}"
            else:
                assert torch.equal(v, s_state[k]), f"{t}.{k} (integer buffer) must be copied from {s}"


def _dice(logits, label):
    p = logits.softmax(1)
    y = F.one_hot(label, logits.shape[1]).movedim(-1, 1).float()
    dims = (0, 2, 3)
    return (1 - (2 * (p * y).sum(dims) + 1e-5) / ((p * p).sum(dims) + y.sum(dims) + 1e-5)).mean()


@pytest.mark.parametrize(("name", "weight"), [("arco-pretrain", 1.0), ("arco-finetune", 1.0), ("supervised", 0.5)])
def test_supervised_term_is_ce_plus_dice_with_the_methods_weight(name, weight):
    m = build(name)
    b = batch()
    seen = {}

    def hook(_m, _i, out) -> None:
        seen.setdefault("logits", out.logits)

    m.components()["student"].register_forward_hook(hook)
    out = m.training_step(b, 0)
    logits = seen["logits"][: b.image_l.shape[0]].detach()
    expected = weight * (F.cross_entropy(logits, b.label_l) + _dice(logits, b.label_l))
    assert float(out.logs["loss_sup"]) == pytest.approx(float(expected), rel=1e-5)


def test_batch_contrast_draws_only_confident_pseudo_labels(monkeypatch):
    from arco import sampling
    from arco.losses import contrastive

    drawn = []
    original = sampling.sample_per_class

    def spy(label, *args, **kwargs):
        index, ok = original(label, *args, **kwargs)
        drawn.append((index[ok], label.shape))
        return index, ok

    monkeypatch.setattr(contrastive.sampling, "sample_per_class", spy, raising=True)
    counts, labeled = {}, {}
    for threshold in (1.01, 0.0):  # nothing confident / everything confident
        drawn.clear()
        m = build("arco-finetune", confidence=threshold, contrast="batch")
        out = m.training_step(batch(), 0)
        index, shape = drawn[-1]
        labeled_pixels = 2 * shape[1] * shape[2]  # the first two images of the batch are the labeled ones
        counts[threshold] = int((index >= labeled_pixels).sum())
        labeled[threshold] = int((index < labeled_pixels).sum())
        if threshold > 1:
            assert float(out.logs["loss_unsup"]) == 0.0 and float(out.logs["confident"]) == 0.0
    assert counts[1.01] == 0, "unconfident unlabeled pixels entered the contrastive loss"
    assert labeled[1.01] > 0, "labeled pixels must enter the contrastive loss whatever the confidence"
    assert counts[0.0] > 0  # the check above can fail: with every pixel valid, unlabeled pixels are drawn


def test_sampler_strategy_and_grid_reach_the_sampler_from_the_config(monkeypatch, tmp_path):
    from arco import sampling
    from arco.config import load_config
    from arco.losses import contrastive
    from arco.pipeline import build_stage_method

    seen = []
    original = sampling.sample_per_class

    def spy(label, num_classes, num, strategy, grid=4, **kwargs):
        seen.append((strategy, grid))
        return original(label, num_classes, num, strategy, grid=grid, **kwargs)

    monkeypatch.setattr(contrastive.sampling, "sample_per_class", spy, raising=True)
    from _tiny import tiny_data

    data = tiny_data(2)
    for sampler, grid in (("sag", 2), ("ns", 3)):
        cfg = load_config("demo", [f"finetune.sampler={sampler}", f"finetune.grid={grid}", "model.dim=8"])
        m = build_stage_method(cfg, cfg.stage("finetune"), data)
        m.setup(torch.device("cpu"), 0, 10)
        m.set_training(True)
        m.training_step(batch(), 0)
        assert seen[-1] == (sampler, grid)


def test_nearest_neighbour_term_trains_the_student_once_its_bank_is_full():
    def grads(lambda_nn: float) -> dict[str, torch.Tensor]:
        m = build("arco-finetune", lambda_contrast=0.0, lambda_unsup=0.0, lambda_nn=lambda_nn, nn_bank=4, nn_k=2)
        for it in range(3):  # two unlabeled images per step: the 4-entry bank is full after two steps
            sgd_step(m, batch(seed=10 + it), it, lr=0.0)
        assert bool(m.components()["nn_loss"].bank_valid.all())
        out = m.training_step(batch(seed=99), 3)
        assert lambda_nn == 0 or float(out.logs["loss_nn"]) > 0
        out.loss.backward()
        return {n: p.grad.clone() for n, p in m.components()["student"].named_parameters() if p.grad is not None}

    with_nn, without = grads(1.0), grads(0.0)
    differ = [n for n in with_nn if not torch.allclose(with_nn[n], without[n], atol=1e-8)]
    assert differ, "L_nn carries no gradient to the student"


@pytest.mark.parametrize("contrast", ["reference", "batch"])
def test_finetune_never_runs_the_students_representation_densely(monkeypatch, contrast):
    # The student's representation is evaluated at the sampled anchors only; the reference loss needs the teacher's
    # dense map (its positive averages every candidate, its banks take every negative pixel), the batch loss not.
    from arco.models import FusedRepresentation

    m = build("arco-finetune", contrast=contrast)
    calls = []
    original = FusedRepresentation.dense

    def dense(self, features):
        calls.append(self is m.components()["teacher_rep_head"])
        return original(self, features)

    monkeypatch.setattr(FusedRepresentation, "dense", dense)
    out = m.training_step(batch(), 0)
    assert torch.isfinite(out.loss)
    assert calls == ([True] if contrast == "reference" else [])


@pytest.mark.parametrize("contrast", ["reference", "batch"])
def test_teacher_keys_come_from_the_mixed_strong_view(monkeypatch, contrast):
    # The teacher's representation (keys, positives, banks) is computed on the CutMix + photometric view the student
    # sees, not on the un-mixed unlabeled images (the reference: ema_model(train_u_aug_data)).
    from arco.methods._arco_common import levels

    m = build("arco-finetune", contrast=contrast, cutmix_p=1.0, strong_view="none")
    views_seen = []
    original = m.strong_views
    monkeypatch.setattr(m, "strong_views", lambda b, g: views_seen.append(original(b, g)) or views_seen[-1])
    b = batch()
    m.training_step(b, 0)
    views = views_seen[-1]
    assert not torch.equal(views.image, b.image_u)  # CutMix changed the images
    with torch.no_grad():
        mixed = m.teacher(torch.cat([b.image_l, views.image]))
        plain = m.teacher(torch.cat([b.image_l, b.image_u]))
    for got, want in zip(views.teacher_levels, levels(mixed)):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(views.teacher_levels[-1], levels(plain)[-1])
    torch.testing.assert_close(views.teacher_prob, torch.softmax(mixed.logits, dim=1))


def test_stage1_passes_each_temperature_to_its_side():
    m = build("arco-pretrain", tau_s=0.2, tau_t=0.03)
    for loss in (m.components()["inst_global"], m.components()["inst_local"]):
        assert (loss.tau_s, loss.tau_t) == (0.2, 0.03)


def test_stage1_instance_losses_cover_the_whole_batch(monkeypatch):
    # The reference runs its instance discrimination on the whole batch: 3 labeled + 2 unlabeled rows here.
    from arco.losses import RelationalInstanceLoss

    rows = []
    original = RelationalInstanceLoss.forward
    monkeypatch.setattr(
        RelationalInstanceLoss, "forward", lambda self, s, t: rows.append(s.shape[0]) or original(self, s, t)
    )
    build("arco-pretrain").training_step(_three_labeled_batch(), 0)
    assert rows == [5, 5]


@pytest.mark.parametrize("stage", ["arco-pretrain", "arco-finetune"])
def test_arco_heads_hold_no_batchnorm(stage):
    # The reference code's heads are linear (no BatchNorm): only the backbones normalise over the batch.
    from torch.nn.modules.batchnorm import _BatchNorm

    m = build(stage)
    heads = {n: mod for n, mod in m.components().items() if n not in ("student", "teacher")}
    assert heads and not [n for n, mod in heads.items() for x in mod.modules() if isinstance(x, _BatchNorm)]


def test_bad_arguments_are_named():
    cfg = params_for("supervised")
    with pytest.raises(ValueError, match="num_classes"):
        build_method("supervised", cfg, 1, 2, ModelConfig())
    with pytest.raises(ValueError, match="3D network but the data is 2D"):
        build_method("supervised", cfg, 2, 2, ModelConfig(arch="vnet"))
    with pytest.raises(TypeError, match="takes a SupervisedConfig"):
        build_method("supervised", params_for("arco-pretrain"), 2, 2, ModelConfig())


def _capture_student(m) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    m.components()["student"].register_forward_hook(lambda _m, _i, out: seen.append(out.logits.detach()))
    return seen


def _three_labeled_batch() -> Batch:
    """3 labeled + 2 unlabeled images: the two batch sizes differ, so a mix-up of the two shows."""
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(3, 1, 32, 32, generator=g), torch.randint(0, 3, (3, 32, 32), generator=g), batch().image_u)


def test_equivariance_term_is_the_reference_masked_kl(monkeypatch):
    # A quarter turn maps pixel centres onto pixel centres, so the warp is an exact rot90 and the expected value can
    # be computed by hand from the student's three forwards (labeled, strong, warped).
    from arco.methods import arco as arco_module

    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    monkeypatch.setattr(arco_module, "random_similarity", lambda n, *a, **k: quarter.repeat(n, 1, 1))
    m = build("arco-finetune", lambda_eqv=1.0, eqv_confidence=0.5, strong_view="none")
    views_seen = []
    original = m.strong_views
    monkeypatch.setattr(m, "strong_views", lambda b, g: views_seen.append(original(b, g)) or views_seen[-1])
    seen = _capture_student(m)
    b = _three_labeled_batch()
    out = m.training_step(b, 0)
    views = views_seen[-1]
    assert len(seen) == 3 and torch.equal(views.mixed, views.image)  # strong_view "none": no photometric part
    logits = torch.cat([seen[0], seen[1]])
    label = torch.cat([b.label_l, views.pseudo])
    conf = torch.cat([torch.ones_like(b.label_l, dtype=views.confidence.dtype), views.confidence])
    rot = lambda t: torch.rot90(t, 1, dims=(-2, -1))  # noqa: E731
    target = torch.softmax(rot(logits), dim=1)
    kl = (target * (target.log() - F.log_softmax(seen[2], dim=1))).sum(1)
    mask = rot(((label != 0) & (conf >= 0.5)).float())
    expected = ((kl * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) + 1e-7)).mean()
    assert float(out.logs["loss_eqv"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(expected) > 0


def test_equivariance_weight_enters_the_objective_and_is_off_by_default():
    def step(**over):
        out = build("arco-finetune", **over).training_step(batch(), 0)
        return float(out.loss.detach()), float(out.logs["loss_eqv"])

    base, eqv0 = step()
    weighted, eqv = step(lambda_eqv=2.0)
    assert eqv0 == 0.0 and eqv > 0  # the paper's objective has no equivariance term
    assert weighted - base == pytest.approx(2.0 * eqv, rel=1e-4)
