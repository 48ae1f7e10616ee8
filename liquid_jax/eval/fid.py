"""FID as clean-fid computes it in "clean" mode (per category for MJHQ-30K), and CLIP score.

The numbers are those of ``cleanfid.fid.compute_fid(reference, generated, mode="clean")``,
which upstream Liquid's evaluation script reports: every image is read as RGB, resized to
299x299 by clean-fid's own resizer (PIL bicubic on float32 channels, no quantisation), fed
in [0, 255] to StyleGAN2-ADA's Inception-v3 TorchScript (``inception-2015-12-05.pt``) with
clean-fid's normalisation, and the Frechet distance of the two feature Gaussians is taken
as clean-fid takes it. ``cleanfid.fid`` imports torchvision at import (for its legacy
modes), which often cannot be installed beside a given torch, so only the torchvision-free
``cleanfid.resize`` is imported; the model call and the distance are restated here.

CLIP score is torchmetrics' ``CLIPScore`` with a CLIP model directory on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image

from liquid_jax import paths
from liquid_jax.errors import UserError

if TYPE_CHECKING:
    import torch

MODE = "clean"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
CLEANFID_INSTALL = "pip install --no-deps clean-fid==0.1.35"
# clean-fid's image extensions (its .npy arrays are left out: sample folders hold codes.npy).
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})
INCEPTION_NAME = f"{INCEPTION_FILE} (clean-fid's TorchScript Inception-v3, pool3 features)"

# Images in [0, 255], float32 [B, 3, 299, 299] -> features [B, D].
FeatureExtractor = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclasses.dataclass
class FidSummary:
    """What ``liquid-jax eval fid`` reports (and writes as JSON)."""

    fid: float
    per_category: dict[str, dict[str, Any]] | None
    n_generated: int
    n_reference: int | None  # None for a statistics file
    mode: str
    feature_extractor: str
    generated: str
    reference: str
    clip_score: float | None = None
    clip_model: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def clean_fid_cache_dir() -> str:
    """Where clean-fid keeps (and would download) the Inception weights."""
    return "./" if platform.system() == "Windows" else "/tmp"


def find_inception(path: str | None = None) -> str:
    """The Inception TorchScript file: ``path`` (the file or its folder), else clean-fid's cache."""
    if path is None:
        folder = clean_fid_cache_dir()
        candidate = os.path.join(folder, INCEPTION_FILE)
        where = "clean-fid's cache; --inception gives another place"
    else:
        given = paths.local(path, "--inception")
        if os.path.isfile(given) or given.endswith(".pt"):
            folder, candidate = os.path.dirname(given), given
        else:
            folder, candidate = given, os.path.join(given, INCEPTION_FILE)
        where = "--inception"
    if not os.path.isfile(candidate):
        raise UserError(f"Inception weights {candidate} not found ({where}); nothing is downloaded here: fetch "
                        f"{INCEPTION_URL} (e.g. `wget -P {folder or '.'} {INCEPTION_URL}` on a machine with "
                        "internet), then copy it over")
    return candidate


def inception_extractor(path: str, device: str) -> FeatureExtractor:
    """clean-fid's ``InceptionV3W`` in clean mode, loaded from ``path``: 2048-d pool features.

    Its forward is restated, not imported: it fixes the width at 2048 and loads without
    ``map_location``.
    """
    import torch

    try:
        base = torch.jit.load(path, map_location=device).eval()
        layers = base.layers
    except (RuntimeError, AttributeError) as e:
        raise UserError(f"{path} is not clean-fid's Inception TorchScript ({INCEPTION_URL}): {e}") from e

    def extract(images: torch.Tensor) -> torch.Tensor:
        return layers((images - 128) / 128).flatten(1)

    return extract


def list_images(directory: str, what: str) -> list[str]:
    """Image files under ``directory``, recursively, sorted by path as clean-fid lists them."""
    folder = paths.local(directory, what)
    if not os.path.isdir(folder):
        raise UserError(f"{what} {directory} is not a folder of images")
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [os.path.join(root, n) for n in names
                  if not n.startswith(".") and os.path.splitext(n)[1][1:].lower() in IMAGE_EXTENSIONS]
    if len(files) < 2:
        raise UserError(f"{what} {directory} holds {len(files)} images (.png, .jpg, ...); FID needs at least 2")
    return sorted(files)


def category_of(directory: str, files: Sequence[str], what: str) -> list[str]:
    """The category (first folder below ``directory``) of each file: MJHQ-30K's DIR/<category>/<id>.png."""
    folder = paths.local(directory, what)
    categories = []
    for file in files:
        parts = os.path.relpath(file, folder).split(os.sep)
        if len(parts) == 1:
            raise UserError(f"{what} {directory} has images outside category folders ({file}); --per_category "
                            "expects DIR/<category>/<image>")
        categories.append(parts[0])
    for name in sorted(os.listdir(folder)):
        if not name.startswith(".") and os.path.isdir(os.path.join(folder, name)) and categories.count(name) < 2:
            raise UserError(f"category folder {os.path.join(directory, name)} holds {categories.count(name)} "
                            "images; FID needs at least 2")
    return categories


def require_cleanfid() -> None:
    """A one-line error with the install command when clean-fid is missing."""
    try:
        import cleanfid.resize  # noqa: F401
    except ImportError as e:
        raise UserError(f"clean-fid is not installed ({e}); `{CLEANFID_INSTALL}`") from e


def load_clean(path: str) -> np.ndarray:
    """One image as clean mode feeds it to Inception: RGB, float32 [3, 299, 299] in [0, 255]."""
    from cleanfid.resize import build_resizer

    with Image.open(path) as image:
        rgb = np.array(image.convert("RGB"))
    return build_resizer(MODE)(rgb).transpose(2, 0, 1)


class _CleanImages:
    """Map-style dataset of clean-mode images; an unreadable file gives its error, not an exception,
    so the message names the file even from a worker process."""

    def __init__(self, files: Sequence[str]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        try:
            return load_clean(self.files[i]), ""
        except (OSError, ValueError) as e:
            return np.zeros((3, 299, 299), np.float32), f"{type(e).__name__}: {e}"


def extract_features(files: Sequence[str], extractor: FeatureExtractor, *, batch_size: int = 32,
                     num_workers: int = 0, device: str = "cpu", desc: str | None = None) -> np.ndarray:
    """Features [N, D] of ``files`` in order (``desc`` names a progress bar)."""
    import torch
    from tqdm.auto import tqdm

    require_cleanfid()
    loader = torch.utils.data.DataLoader(_CleanImages(files), batch_size=batch_size, shuffle=False,
                                         drop_last=False, num_workers=num_workers)
    features = []
    with torch.no_grad():
        for start, (batch, errors) in zip(range(0, len(files), batch_size),
                                          tqdm(loader, desc=desc, disable=desc is None)):
            for offset, error in enumerate(errors):
                if error:
                    raise UserError(f"cannot read image {files[start + offset]}: {error}")
            features.append(extractor(batch.to(device)).detach().cpu().numpy())
    return np.concatenate(features)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of [N, D] features, in clean-fid's dtypes."""
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def load_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a .npz: clean-fid's statistics (keys mu, sigma) or its feature file (feats)."""
    try:
        data = np.load(paths.local(path, "--reference"))
    except (OSError, ValueError) as e:
        raise UserError(f"--reference {path} is not a readable .npz of FID statistics: {e}") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"--reference {path} holds a single array; expected a .npz with mu and sigma")
    with data:
        keys = set(data.files)
        if {"mu", "sigma"} <= keys:
            mu, sigma = data["mu"], data["sigma"]
        elif "feats" in keys:
            mu, sigma = statistics(data["feats"])
        else:
            raise UserError(f"--reference {path} has keys {sorted(keys)}; expected mu and sigma (clean-fid's "
                            "statistics) or feats (its feature file)")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"--reference {path}: mu {mu.shape} and sigma {sigma.shape} should be [D] and [D, D]")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), computed as clean-fid does."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # a singular product: clean-fid retries with eps on the diagonal
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrt(sigma1 sigma2) has an imaginary part of {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_fid(generated: str, reference: str, *, per_category: bool = False, inception: str | None = None,
                feature_extractor: FeatureExtractor | None = None, feature_name: str | None = None,
                batch_size: int = 32, num_workers: int = 0, device: str | None = None,
                progress: bool = False) -> FidSummary:
    """FID of the images under ``generated`` against the images under ``reference`` (or its .npz
    statistics), in clean-fid's clean mode.

    ``per_category`` adds one FID per category folder (both sides must hold the same ones).
    ``feature_extractor`` replaces Inception (then ``inception`` is not read; ``feature_name``
    names it in the summary).
    """
    gen_files = list_images(generated, "--generated")
    stats_file = not os.path.isdir(paths.local(reference, "--reference"))
    if stats_file and not os.path.isfile(paths.local(reference, "--reference")):
        raise UserError(f"--reference {reference} is neither a folder of images nor a .npz of statistics")
    if stats_file and per_category:
        raise UserError(f"--per_category needs --reference to be a folder of images, not {reference}")
    ref_files = [] if stats_file else list_images(reference, "--reference")
    if per_category:
        gen_categories = category_of(generated, gen_files, "--generated")
        ref_categories = category_of(reference, ref_files, "--reference")
        for missing, side, other in ((set(gen_categories) - set(ref_categories), reference, generated),
                                     (set(ref_categories) - set(gen_categories), generated, reference)):
            if missing:
                raise UserError(f"categories {sorted(missing)} of {other} are missing in {side}; both sides "
                                "need the same category folders")
    ref_stats = load_statistics(reference) if stats_file else None

    device = device or default_device()
    if feature_extractor is None:
        feature_extractor = inception_extractor(find_inception(inception), device)
        feature_name = INCEPTION_NAME
    features = dict(batch_size=batch_size, num_workers=num_workers, device=device)
    gen = extract_features(gen_files, feature_extractor, desc="generated" if progress else None, **features)
    if ref_stats is not None:
        if ref_stats[0].shape[0] != gen.shape[1]:
            raise UserError(f"--reference {reference} holds {ref_stats[0].shape[0]}-d statistics; the feature "
                            f"extractor gives {gen.shape[1]}-d features")
        # clean-fid's fid_folder order: generated, then the reference statistics.
        fid = frechet_distance(*statistics(gen), *ref_stats)
        per = None
    else:
        ref = extract_features(ref_files, feature_extractor, desc="reference" if progress else None, **features)
        # clean-fid's compare_folders order: upstream's get_fid passes the reference as fdir1.
        fid = frechet_distance(*statistics(ref), *statistics(gen))
        per = None
        if per_category:
            per = {}
            gen_of, ref_of = np.asarray(gen_categories), np.asarray(ref_categories)
            for name in sorted(set(gen_categories)):
                g, r = gen[gen_of == name], ref[ref_of == name]
                per[name] = {"fid": frechet_distance(*statistics(r), *statistics(g)),
                             "n_generated": len(g), "n_reference": len(r)}
    return FidSummary(fid=fid, per_category=per, n_generated=len(gen_files),
                      n_reference=None if stats_file else len(ref_files), mode=MODE,
                      feature_extractor=feature_name or "custom", generated=generated, reference=reference)


def read_prompts(prompts_file: str, files: Sequence[str]) -> list[str]:
    """The prompt of each image: ``prompts_file`` is JSON mapping an image's name without extension
    to its prompt, or to an object with a "prompt" (MJHQ-30K's meta_data.json as it is)."""
    path = paths.resolve(prompts_file)
    if not path.exists():
        raise UserError(f"--prompts {prompts_file} not found")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"--prompts {prompts_file} is not JSON: {e}") from e
    if not isinstance(table, dict):
        raise UserError(f"--prompts {prompts_file} should map image names to prompts (a JSON object)")
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise UserError(f"image names {twice[:3]} occur more than once under --generated; prompts are matched by name")
    missing = [s for s in stems if s not in table]
    if missing:
        raise UserError(f"--prompts {prompts_file} has no prompt for {len(missing)} images, e.g. {missing[:3]}")
    prompts = [table[s]["prompt"] if isinstance(table[s], dict) else table[s] for s in stems]
    if not all(isinstance(p, str) for p in prompts):
        raise UserError(f"--prompts {prompts_file}: every prompt should be a string")
    return prompts


def _clip_model(directory: str) -> tuple[Any, Any]:
    """A CLIP model and processor from ``directory``, the model's features as plain tensors
    (transformers 5 returns model outputs, which torchmetrics 1.9 cannot normalise)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    local = paths.local(directory, "--clip_model")
    if not os.path.isfile(os.path.join(local, "config.json")):
        raise UserError(f"--clip_model {directory} is not a Hugging Face CLIP model directory (no config.json)")

    class TensorFeatures(torch.nn.Module):
        def __init__(self, model: CLIPModel):
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = self.model.get_image_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

        def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = self.model.get_text_features(*args, **kwargs)
            return getattr(out, "pooler_output", out)

    return TensorFeatures(CLIPModel.from_pretrained(local).eval()), CLIPProcessor.from_pretrained(local)


def clip_score(files: Sequence[str], prompts: Sequence[str], clip_model: str, *, batch_size: int = 32,
               device: str | None = None, progress: bool = False) -> float:
    """torchmetrics' CLIP score of images and their prompts: max(100 * mean cos(image, text), 0)."""
    import torch
    from tqdm.auto import tqdm

    try:
        from torchmetrics.multimodal.clip_score import CLIPScore
    except ImportError as e:
        raise UserError(f"CLIP score needs torchmetrics and transformers ({e}); `pip install -e \".[eval]\"`") from e
    model, processor = _clip_model(clip_model)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    device = device or default_device()
    with torch.no_grad():
        for start in tqdm(range(0, len(files), batch_size), desc="CLIP score", disable=not progress):
            images = []
            for file in files[start:start + batch_size]:
                with Image.open(file) as image:
                    images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).to(device))
            metric.update(images, list(prompts[start:start + batch_size]))
    return float(metric.compute())
