"""Noise stability: weight noise of the requested relative size, small output changes."""

import copy

import numpy as np
import pytest
import torch

from napari_ktal.core.data import ArraySource
from napari_ktal.core.strategies.noise_stability import add_weight_noise, output_changes


def test_weight_noise_has_the_requested_relative_norm_per_layer(tiny_net):
    noisy = copy.deepcopy(tiny_net)
    add_weight_noise(noisy, 1e-3, torch.Generator().manual_seed(0))
    for (name, w0), w1 in zip(tiny_net.named_parameters(), noisy.parameters()):
        if name.endswith("weight") and w0.norm() > 0:
            assert ((w1 - w0).norm() / w0.norm()).item() == pytest.approx(1e-3, rel=1e-3)
        else:  # biases untouched; zero-initialised weights stay zero
            assert torch.equal(w0, w1)


def test_output_changes_shape_and_scale(tiny_net):
    vols = np.random.default_rng(0).normal(size=(5, 16, 16, 16)).astype(np.float32)
    feats = output_changes(tiny_net, ArraySource(vols), np.arange(5), torch.device("cpu"), passes=3,
                           scale=1e-3, generator=torch.Generator().manual_seed(0))
    assert feats.shape == (5, 3 * 3)
    assert 0 < feats.abs().max() < 0.1  # small noise, small but non-zero changes
