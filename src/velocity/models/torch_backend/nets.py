"""The built-in torch networks: an MLP, a small CNN (two conv + two dense layers) and a small
ResNet with GroupNorm (FL papers' choice for CIFAR: BatchNorm statistics average badly)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SmallCNN", "SmallResNet", "TorchMLP"]


class TorchMLP(nn.Sequential):
    """ReLU MLP on flattened inputs; its layers are ``nn.Linear`` in order (no other
    parameters), so its flat layout maps onto the NumPy MLP's."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...]) -> None:
        widths = [in_features, *hidden, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for index in range(len(widths) - 1):
            layers.append(nn.Linear(widths[index], widths[index + 1]))
            if index < len(widths) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def _pooled(size: int) -> int:
    return size // 2 if size >= 2 else size


class SmallCNN(nn.Module):
    """conv3x3(C->w) ReLU maxpool, conv3x3(w->2w) ReLU maxpool, dense(hidden) ReLU, dense(C)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, channels: int, hidden: int
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.pool1 = nn.MaxPool2d(2) if min(h, w) >= 2 else nn.Identity()
        h, w = _pooled(h), _pooled(w)
        self.pool2 = nn.MaxPool2d(2) if min(h, w) >= 2 else nn.Identity()
        h, w = _pooled(h), _pooled(w)
        self.conv1 = nn.Conv2d(c, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc1 = nn.Linear(2 * channels * h * w, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, -3))))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet of three stages (width w, 2w, 4w; stride 2 between), ``blocks`` basic blocks
    each, GroupNorm throughout, global average pooling and a dense classifier."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, width: int, blocks: int
    ) -> None:
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), _norm(width))
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_Block(cin, cout, stride))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(torch.relu(self.stem(x)))
        return self.head(x.mean(dim=(-2, -1)))
