import pytest
import torch
from semizoo.losses import SoftmaxMSELoss, dice_ce_loss, softmax_mse


def _reference_dice(probs, onehot, classes, smooth=1e-5):
    """SSL4MIS/UA-MT Dice written out: 1 - (2Σpy + s)/(Σp² + Σy² + s), averaged over ``classes``."""
    losses = []
    for c in classes:
        p, y = probs[:, c], onehot[:, c]
        losses.append(1 - (2 * (p * y).sum() + smooth) / ((p * p).sum() + (y * y).sum() + smooth))
    return sum(losses) / len(losses)


@pytest.mark.parametrize(
    "include_background, n_classes, spatial",
    [(True, 4, (16, 16)), (False, 2, (8, 8, 6))],
    ids=["acdc_4class_2d", "la_foreground_3d"],
)
def test_dice_ce_equals_reference_formula(include_background, n_classes, spatial):
    logits = torch.randn(3, n_classes, *spatial)
    labels = torch.randint(0, n_classes, (3, 1, *spatial))
    onehot = torch.nn.functional.one_hot(labels[:, 0], n_classes).movedim(-1, 1).float()
    probs = torch.softmax(logits, dim=1)
    classes = range(n_classes) if include_background else range(1, n_classes)
    expected = 0.5 * torch.nn.functional.cross_entropy(logits, labels[:, 0]) + 0.5 * _reference_dice(
        probs, onehot, classes
    )
    got = dice_ce_loss(include_background=include_background)(logits, labels)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_softmax_mse_value_and_gradients():
    student = torch.randn(2, 3, 5, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5, 5, requires_grad=True)
    loss = softmax_mse(student, teacher)
    expected = ((torch.softmax(student, 1) - torch.softmax(teacher, 1)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher receives no gradient


def test_softmax_mse_mask_and_reductions():
    student, teacher = torch.randn(2, 2, 4, 4, 4), torch.randn(2, 2, 4, 4, 4)
    mask = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    dist = (torch.softmax(student, 1) - torch.softmax(teacher, 1)) ** 2
    expected = (dist * mask).sum() / (2 * mask.sum())  # UA-MT's masked mean
    assert softmax_mse(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert softmax_mse(student, teacher, reduction="none").shape == dist.shape
    assert SoftmaxMSELoss("sum")(student, teacher).item() == pytest.approx(dist.sum().item(), rel=1e-6)


def test_softmax_mse_errors():
    with pytest.raises(ValueError, match=r"differ in shape: \(1, 2, 4\) vs \(1, 3, 4\)"):
        softmax_mse(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="reduction"):
        SoftmaxMSELoss("max")
