"""PatchGAN discriminator (pix2pix / taming layout) for VQGAN adversarial training.

Differences from taming's NLayerDiscriminator: GroupNorm instead of BatchNorm (no batch
statistics to carry through a functional train step), and a fixed adversarial weight.
"""

from __future__ import annotations

import jax
from flax import nnx

from liquid_jax.model.vqgan import Conv, GroupNorm
from liquid_jax.model.vqgan_config import VQGANConfig

_PAD1 = ((1, 1), (1, 1))


class PatchGAN(nnx.Module):
    """Images [B, H, W, C] -> real/fake logits per overlapping patch [B, h, w, 1]."""

    def __init__(self, cfg: VQGANConfig, *, ndf: int = 64, n_layers: int = 3, rngs: nnx.Rngs):
        convs, norms = [Conv(cfg, cfg.out_ch, ndf, 4, rngs=rngs, stride=2, padding=_PAD1)], [None]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            convs.append(Conv(cfg, width, out, 4, rngs=rngs, stride=stride, padding=_PAD1))
            norms.append(GroupNorm(cfg, out))
            width = out
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.head = Conv(cfg, width, 1, 4, rngs=rngs, padding=_PAD1)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = conv(h)
            if norm is not None:
                h = norm(h)
            h = jax.nn.leaky_relu(h, 0.2)
        return self.head(h).astype(jax.numpy.float32)
