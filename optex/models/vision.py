"""Image classifiers: the paper's 5-layer MLP (v1 Sec. 6.3) and a LeNet-5-style CNN for CIFAR-10.

Both take a batch of images (b, channels, height, width) and return class logits (b, classes). They
hold no buffers and no dropout, so ``torch.func.functional_call`` with the parameters alone evaluates
them, under ``vmap`` too (one call for OptEx's N points).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp_dim(in_features: int, width: int, depth: int, classes: int = 10) -> int:
    """d of :class:`MLP`: weights and biases of its ``depth`` linear layers."""
    sizes = [in_features] + [width] * (depth - 1) + [classes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


class MLP(nn.Module):
    """``depth`` fully connected layers with ReLU between them: in_features -> width -> ... -> classes.

    The paper's "5-layer MLP" is ``depth=5`` (four hidden layers); its width is not legible in the
    available text. At width 512 on 28 x 28 images d = 1,195,018; at width 256, d = 400,906.
    """

    def __init__(self, in_features: int = 784, width: int = 512, depth: int = 5, classes: int = 10) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        sizes = [in_features] + [width] * (depth - 1) + [classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def cnn_dim(in_channels: int, image_size: int, width: int, classes: int = 10) -> int:
    """d of :class:`CNN`."""
    side = ((image_size - 4) // 2 - 4) // 2
    return ((in_channels * 25 + 1) * width + (width * 25 + 1) * 2 * width
            + (2 * width * side * side + 1) * 8 * width + (8 * width + 1) * classes)


class CNN(nn.Module):
    """LeNet-5's layout with ReLU and max-pooling (as in PyTorch's CIFAR-10 tutorial), sized by ``width``.

    conv 5x5 (width channels) -> ReLU -> max-pool 2 -> conv 5x5 (2 width) -> ReLU -> max-pool 2 ->
    linear (8 width) -> ReLU -> linear (classes). No BatchNorm. On CIFAR-10 (3 x 32 x 32) at width 16,
    d = 117,866.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 convolutions and poolings")
        self.conv1 = nn.Conv2d(in_channels, width, 5)
        self.conv2 = nn.Conv2d(width, 2 * width, 5)
        self.fc1 = nn.Linear(2 * width * side * side, 8 * width)
        self.fc2 = nn.Linear(8 * width, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
