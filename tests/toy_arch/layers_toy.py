from torch import nn


class ConvBlock(nn.Module):
    """A sibling building-block file: proves relative imports travel with remote code."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.norm(self.conv(x)).relu()
