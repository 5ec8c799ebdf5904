"""The torch backend's kernels for the layers of :mod:`convert.model.keras_layers`.

Keras' torch backend runs every channels-last convolution as: copy the NHWC
input into a contiguous NCHW tensor, copy it again into torch's channels-last
memory format, transpose the kernel, convolve, and view the result as NHWC;
and its generic ops make a group norm a dozen passes over the activations.
BiT's activations are NHWC in memory, which *is* torch's channels-last format:
viewed as NCHW (a ``permute``, no copy) they go straight to the convolution,
and its channels-last output viewed back as NHWC is contiguous. The group
statistics come from ``torch.var_mean`` (one accurate pass), the affine map
from one ``addcmul``. The same arithmetic as the generic path (two-pass
variance: the mean of squared deviations, never ``E[x^2] - E[x]^2``), in
fewer passes. Imported only when Keras runs on torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def standardized_conv2d(inputs, kernel, strides: tuple[int, int], ws_eps: float):
    """VALID conv of NHWC ``inputs`` with the weight-standardised HWIO ``kernel`` (over H, W, I); NHWC out."""
    kh, kw, cin, cout = kernel.shape
    # Per output channel over (H, W, I) = the rows of the (HWI, O) view of the kernel: two-pass,
    # reduced over the outer axis (vectorised over O). Not F.batch_norm on that view, as timm does
    # on OIHW: its statistics for this layout cost R50x1's logits 8e-5 (against 8e-6).
    k = kernel.reshape(kh * kw * cin, cout)
    centred = k - k.mean(dim=0)
    k = centred * torch.rsqrt((centred * centred).mean(dim=0) + ws_eps)
    sh, sw = strides
    if kh == kw == 1:  # a matrix product over the channels of the NHWC rows: no layout change at all
        x = inputs if sh == sw == 1 else inputs[:, ::sh, ::sw, :]
        n, h, w, _ = x.shape
        return (x.reshape(n * h * w, cin) @ k).view(n, h, w, cout)
    k = k.t().contiguous().view(cout, kh, kw, cin).permute(0, 3, 1, 2)  # OIHW, channels-last in memory
    return F.conv2d(inputs.permute(0, 3, 1, 2), k, stride=(sh, sw)).permute(0, 2, 3, 1)


def group_norm(x, gamma, beta, groups: int, epsilon: float):
    """Group norm of NHWC ``x``: statistics over (H, W, channels-in-group), then ``* gamma + beta``.

    Sums over H and W first (fast, vectorised over the contiguous channels),
    then over the channels of each group: the group mean, then the mean of
    squared deviations from it (two passes, never ``E[x^2] - E[x]^2``). The
    result is one ``addcmul``, ``x * scale + shift``, as torch's own group norm
    applies it.
    """
    n, h, w, c = x.shape
    per_group = c // groups
    x = x.contiguous()

    def group_mean(t):  # (n, h, w, c) -> (n, 1, 1, c): each channel gets its group's mean over (h, w, group)
        s = t.sum(dim=(1, 2)).view(n, groups, per_group).sum(dim=2, keepdim=True) / (h * w * per_group)
        return s.expand(n, groups, per_group).reshape(n, 1, 1, c)

    mean = group_mean(x)
    centred = x - mean
    squares = centred * centred if torch.is_grad_enabled() else centred.square_()  # inference: reuse the temporary
    scale = torch.rsqrt(group_mean(squares) + epsilon) * gamma
    return torch.addcmul(beta - mean * scale, x, scale)
