"""MC dropout for BALD: masks, rates, and the classifier-only passes."""

import numpy as np
import torch
from torch import nn

from napari_ktal.core.models import ResNet3D
from napari_ktal.core.strategies.bald import dropout_rate, mc_dropout_probs
from napari_ktal.core.strategies.heuristics import bald


def test_mc_dropout_probs_shape_rate_and_zero_rate_agreement():
    fc = nn.Linear(8, 3)
    emb = torch.randn(5, 8)
    probs = mc_dropout_probs(fc, emb, 0.5, 6, torch.Generator().manual_seed(0), max_elements=40)  # chunked
    assert probs.shape == (6, 5, 3) and torch.allclose(probs.sum(-1), torch.ones(6, 5))
    assert bald(probs.numpy()).min() > 0
    still = mc_dropout_probs(fc, emb, 0.0, 3)  # no dropout: all passes equal -> BALD 0
    assert np.allclose(bald(still.numpy()), 0.0, atol=1e-7)
    assert dropout_rate(ResNet3D(10, 3, width=2, dropout=0.3), 0.5) == 0.3
    assert dropout_rate(ResNet3D(10, 3, width=2), 0.5) == 0.5
