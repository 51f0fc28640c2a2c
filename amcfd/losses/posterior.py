"""The Gaussian posterior of a pixel given a prior from its surroundings and its own noisy value (Laine et al.,
NeurIPS 2019), per channel:

    prior x ~ N(mu, sigma_p^2),   noise y | x ~ N(x, sigma_n^2)

    L = 1/2 [ (y - mu)^2 / (sigma_p^2 + sigma_n^2) + log(sigma_p^2 + sigma_n^2) ]     (-log p(y), the training loss)
    x_hat = (sigma_n^-2 y + sigma_p^-2 mu) / (sigma_n^-2 + sigma_p^-2)                  (the posterior mean)

The likelihood sees only the sum sigma_p^2 + sigma_n^2. ``posterior_loss`` adds ``prior_weight`` times the
share of it the prior takes, sigma_p^2 / (sigma_p^2 + sigma_n^2) (scale-free, so the same weight holds at any
noise level): the prior explains as little as it can, and the noise curve (a function of intensity alone) takes
the part that does not depend on the surroundings, the noise. Its gradient is at most ``prior_weight`` times the
likelihood's scale, which bounds the bias it puts on the split.
"""
from __future__ import annotations

import torch


def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, prior_var: torch.Tensor, noise_var: torch.Tensor,
                 where: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of L over the elements (or over those where ``where`` is True, broadcast to y's shape)."""
    total = prior_var + noise_var
    nll = 0.5 * ((y - mu) ** 2 / total + total.log())
    if where is None:
        return nll.mean()
    where = where.expand_as(nll)
    return nll[where].mean()


def posterior_mean(y: torch.Tensor, mu: torch.Tensor, prior_var: torch.Tensor,
                   noise_var: torch.Tensor) -> torch.Tensor:
    """x_hat = (sigma_p^2 y + sigma_n^2 mu) / (sigma_p^2 + sigma_n^2): y where the noise vanishes, mu where it
    dominates."""
    return (prior_var * y + noise_var * mu) / (prior_var + noise_var)


def pixel_share(prior_var: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """w_y = sigma_p^2 / (sigma_p^2 + sigma_n^2): the weight x_hat gives the noisy pixel itself (0 where the prior
    is sure, 1 where it knows nothing); also the prior's share of the variance."""
    return prior_var / (prior_var + noise_var)


def posterior_loss(y: torch.Tensor, mu: torch.Tensor, prior_var: torch.Tensor, noise_var: torch.Tensor,
                   where: torch.Tensor | None = None, prior_weight: float = 0.1) -> dict:
    """{'l_nll': gaussian_nll, 'l_prior': prior_weight * the prior's mean share of the variance}, over ``where``."""
    share = pixel_share(prior_var, noise_var)
    if where is not None:
        share = share[where.expand_as(share)]
    return {"l_nll": gaussian_nll(y, mu, prior_var, noise_var, where), "l_prior": prior_weight * share.mean()}
