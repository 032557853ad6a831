"""ResNet-18 for MedMNIST-format images, from MONAI (a maintained medical-imaging library).

MONAI's ``resnet18`` uses BatchNorm inside its residual blocks (its ``norm`` argument reaches
only the stem), whose ``num_batches_tracked`` counters cannot be averaged (``models.compat``).
Every BatchNorm is therefore replaced by a GroupNorm over the same channels: no running
statistics, so the whole model is float parameters, federated as they are.
"""

from __future__ import annotations

from torch import nn

GROUPS = 32  # GroupNorm groups (Wu & He 2018's default); every ResNet-18 width is a multiple


def _group_norm_for_batch_norm(module: nn.Module) -> None:
    """Replace every BatchNorm child of ``module`` (recursively) by a GroupNorm, in place."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, child_name, nn.GroupNorm(min(GROUPS, child.num_features), child.num_features))
        else:
            _group_norm_for_batch_norm(child)


def resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """MONAI's 2-D ResNet-18 (11.2M values) with GroupNorm, for ``(in_channels, H, W)`` images.

    Parameters
    ----------
    in_channels : int
        Image channels: 1 for greyscale, 3 for RGB.
    num_classes : int
        Number of output logits.
    """
    from monai.networks.nets import resnet18 as monai_resnet18  # MONAI only where it is used

    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    model = monai_resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=num_classes)
    _group_norm_for_batch_norm(model)
    return model
