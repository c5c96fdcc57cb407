"""The teacher and student: matching stage sizes, depths, configs, named outputs."""


import pytest
import torch

from napari_ktal.core.models.resnet3d import BLOCKS_PER_STAGE, ResNet3D, build_pair
from napari_ktal.core.models.transfer import TRANSFER_LOSSES
from napari_ktal.core.recipe import DEPTHS, ModelSpec


@pytest.mark.parametrize("stem,sizes", [("cifar", [32, 16, 8, 4]), ("strided", [16, 8, 4, 2])])
def test_teacher_and_student_stages_match_in_size(stem, sizes):
    teacher, student = build_pair(ModelSpec(width=4, stem=stem), n_classes=3)
    x = torch.randn(2, 1, 32, 32, 32)
    out_t, out_s = teacher(x), student(x)
    assert out_t.logits.shape == out_s.logits.shape == (2, 3)
    assert [f.shape[-1] for f in out_t.stages] == sizes == [f.shape[-1] for f in out_s.stages]
    assert [f.shape[1] for f in out_t.stages] == [4, 8, 16, 32]
    for name, loss in TRANSFER_LOSSES.items():
        assert torch.isfinite(loss(out_s, out_t)), name


def test_depths_have_the_right_number_of_blocks():
    count = lambda m: sum(1 for s in m.stages for _ in s)  # noqa: E731
    assert count(ResNet3D(18, 2, width=2)) == 8
    assert count(ResNet3D(10, 2, width=2)) == 4


def test_depths_are_the_recipe_vocabulary_and_a_model_is_rebuilt_from_its_config():
    assert tuple(sorted(BLOCKS_PER_STAGE)) == DEPTHS
    torch.manual_seed(0)
    model = ResNet3D(10, 3, width=2, stem="strided", dropout=0.25)
    copy = ResNet3D.from_config(model.config)
    copy.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    assert copy.config == model.config and torch.equal(copy.eval()(x).logits, model.eval()(x).logits)


def test_outputs_by_name():
    from napari_ktal.core.models import output

    model = ResNet3D(10, 3, width=2, stem="strided").eval()
    out = model(torch.randn(2, 1, 16, 16, 16))
    assert output(out, "logits").shape == (2, 3) and output(out, "embedding").shape == (2, 16)
    assert output(out, "pooled_stages").shape == (2, 2 + 4 + 8 + 16)
    with pytest.raises(ValueError, match="unknown model output"):
        output(out, "stages")
