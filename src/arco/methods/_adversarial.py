"""The two adversarial terms of DAN and SASSNet, within the engine's single backward pass.

The originals (SSL4MIS ``train_adversarial_network_{2D,3D}.py``, SASSNet ``train_gan_sdfloss.py``) alternate two
optimiser steps per iteration: the segmenter minimises ``L_sup + w(t) * CE(D(map_u, x_u), "labeled")`` with the
discriminator frozen in eval mode, then the discriminator minimises ``CE(D(map, x), [labeled | unlabeled])`` on
detached maps of the whole batch. Here both terms enter one loss and one backward, and neither trains the wrong
network: the generator term goes through the discriminator with its parameters detached
(:func:`torch.func.functional_call`), so its gradient reaches the segmenter only; the discriminator term sees
detached maps, so its gradient reaches the discriminator only. The discriminator is trained on this iteration's
maps (train mode, from the same forward pass) rather than on a second eval-mode forward pass after the
segmenter's step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["adversarial_terms", "discriminator_group"]


def adversarial_terms(
    disc: nn.Module, maps: torch.Tensor, images: torch.Tensor, num_labeled: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_adv, loss_disc, disc_acc)`` for a batch whose first ``num_labeled`` items are labeled.

    Args:
        disc: the discriminator, ``disc(maps, images) -> (B, 2)`` logits (class 1 = labeled).
        maps: ``(B, M, *S)`` the segmenter's maps (probabilities or SDFs), with grad.
        images: ``(B, C_in, *S)`` the input images.
        num_labeled: ``B_l``.

    Returns:
        ``loss_adv``: mean ``CE(D(maps_u, x_u), 1)`` through a detached-parameter, eval-mode discriminator (fools
        D into calling unlabeled maps labeled; trains the segmenter only). ``loss_disc``: mean
        ``CE(D(maps.detach(), x), [1]*B_l + [0]*B_u)`` in the discriminator's current mode (trains D only).
        ``disc_acc``: detached accuracy of that discriminator pass.
    """
    b = maps.shape[0]
    target = (torch.arange(b, device=maps.device) < num_labeled).long()
    frozen = {n: p.detach() for n, p in disc.named_parameters()}
    training = disc.training
    disc.eval()  # SSL4MIS / SASSNet: D.eval() for the segmenter's step (no dropout)
    try:
        logits_u = functional_call(disc, frozen, (maps[num_labeled:], images[num_labeled:]))
    finally:
        disc.train(training)
    loss_adv = F.cross_entropy(logits_u.float(), target[:num_labeled].new_ones(b - num_labeled))
    logits = disc(maps.detach(), images)
    loss_disc = F.cross_entropy(logits.float(), target)
    acc = (logits.detach().argmax(1) == target).float().mean()
    return loss_adv, loss_disc, acc


def discriminator_group(disc: nn.Module, lr: float, betas: tuple[float, float]) -> dict:
    """The discriminator's Adam parameter group at a constant learning rate (SSL4MIS / SASSNet never decay it)."""
    return {"params": list(disc.parameters()), "optimizer": "adam", "lr": lr, "betas": tuple(betas), "scheduled": False}
