"""Independent references for VQGAN tests: taming-transformers modules and real images."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import PIL.Image
import torch
import yaml

from liquid_jax.model.vqgan_config import VQGANConfig


def ddconfig(cfg: VQGANConfig) -> dict:
    return dict(
        ch=cfg.ch, out_ch=cfg.out_ch, ch_mult=list(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=list(cfg.attn_resolutions), in_channels=cfg.in_channels,
        resolution=cfg.resolution, z_channels=cfg.z_channels, double_z=False, dropout=0.0,
    )


class TamingVQ(torch.nn.Module):
    """taming's VQModel without its training loss: the same modules and state-dict keys."""

    def __init__(self, cfg: VQGANConfig, seed: int = 0, with_decoder: bool = True):
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer

        super().__init__()
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):  # taming prints the z shape
            self.encoder = Encoder(**ddconfig(cfg))
            if with_decoder:
                self.decoder = Decoder(**ddconfig(cfg))
        self.quantize = VectorQuantizer(cfg.num_image_codes, cfg.embed_dim, beta=0.25)
        # A realistic codebook scale (trained codebooks are not ~1/n_embed small).
        torch.nn.init.normal_(self.quantize.embedding.weight)
        self.quant_conv = torch.nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.eval()

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """float NHWC in [-1, 1] -> int codes [B, h*w] (raster order)."""
        z = self.quant_conv(self.encoder(torch.from_numpy(images).permute(0, 3, 1, 2)))
        _, _, (_, _, idx) = self.quantize(z)
        return idx.reshape(images.shape[0], -1).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """int codes [B, h*w] -> float NHWC."""
        flat = torch.from_numpy(codes.reshape(-1).astype(np.int64))
        zq = self.quantize.get_codebook_entry(flat, (codes.shape[0], grid[0], grid[1], self.quantize.e_dim))
        return self.decoder(self.post_quant_conv(zq)).permute(0, 2, 3, 1).numpy()

    def numpy_state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.state_dict().items()}


def taming_yaml(cfg: VQGANConfig) -> str:
    """A Chameleon-style vqgan.yaml for ``cfg``."""
    doc = {"model": {"target": "taming.models.vqgan.VQModel", "params": {
        "embed_dim": cfg.embed_dim, "n_embed": cfg.num_image_codes, "ddconfig": ddconfig(cfg),
        "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                       "params": {"disc_start": 100000, "codebook_weight": 1.0}},
    }}}
    return yaml.safe_dump(doc)


def real_images(size: int, names=("astronaut", "coffee", "chelsea", "rocket")) -> np.ndarray:
    """uint8 [N, size, size, 3] from skimage.data (short side resized, center crop)."""
    import skimage.data

    from liquid_jax.tokenizer.image import resize_center_crop

    return np.stack([resize_center_crop(PIL.Image.fromarray(getattr(skimage.data, n)()), size) for n in names])
