"""``liquid-jax eval fid``: FID equal to the Frechet distance of the same features by numpy/scipy
and to clean-fid's own ``compute_fid(mode="clean")``, per category on MJHQ-30K's layout, .npz
statistics as reference, torchmetrics' CLIP score against a direct computation, and the user
errors (missing Inception weights, empty folder, categories that differ).

A random-weight conv net stands in for Inception. clean-fid's ``cleanfid.fid`` imports
torchvision, which does not import beside this torch; where it is missing, a stand-in module
gives clean-fid the two names it touches at import and the ``ToTensor`` its clean-mode data
path calls (for float32 arrays torchvision's ToTensor only moves channels first).
"""

import glob
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from helpers import REPO
from liquid_jax.errors import UserError
from liquid_jax.eval import fid

DIM = 4  # features of the stand-in network (fewer than the images of a category)
CATEGORIES = {"animals": (6, 5, 70.0, 160.0), "people": (6, 5, 110.0, 190.0)}  # gen n, ref n, gen mean, ref mean


class TinyNet(torch.nn.Module):
    """Random conv features; as a TorchScript file it has Inception's ``layers`` entry point."""

    def __init__(self, dim: int = DIM, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=4), torch.nn.ReLU(),
                                          torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def save_images(folder, names, mean, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        colour = mean + rng.normal(0, 25, 3)
        pixels = np.clip(rng.normal(colour, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{name}.png"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """MJHQ-30K's layout, DIR/<category>/<id>.png: 12 generated and 10 reference 32x32 images."""
    root = tmp_path_factory.mktemp("fid")
    for i, (category, (n_gen, n_ref, gen_mean, ref_mean)) in enumerate(CATEGORIES.items()):
        save_images(root / "gen" / category, [f"{category}{j:02d}" for j in range(n_gen)], gen_mean, seed=i)
        save_images(root / "ref" / category, [f"{category}{j:02d}" for j in range(n_ref)], ref_mean, seed=10 + i)
    return str(root / "gen"), str(root / "ref")


def files_of(folder):
    return sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))


def clean_resized(path):
    """clean-fid's clean preprocessing, through its own resizer: float32 [3, 299, 299]."""
    from cleanfid.resize import build_resizer

    return build_resizer("clean")(np.array(Image.open(path).convert("RGB"))).transpose(2, 0, 1)


def features(files, layers, normalise=False):
    x = torch.from_numpy(np.stack([clean_resized(f) for f in files]))
    with torch.no_grad():
        return layers((x - 128) / 128 if normalise else x).numpy().astype(np.float64)


def scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture
def cleanfid_fid(monkeypatch):
    """``cleanfid.fid``, importable without a working torchvision; its modules are dropped after."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchvision")
        stub.__version__ = "0.0"
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.transforms.ToTensor = lambda: lambda a: torch.from_numpy(a.transpose(2, 0, 1)).contiguous()
        stub.models = types.ModuleType("torchvision.models")
        stub.models.inception = types.ModuleType("torchvision.models.inception")
        for name in ("InceptionA", "InceptionC", "InceptionE"):  # base classes of its legacy model
            setattr(stub.models.inception, name, torch.nn.Module)
        for module in (stub, stub.transforms, stub.models, stub.models.inception):
            monkeypatch.setitem(sys.modules, module.__name__, module)
    before = set(sys.modules)
    import cleanfid.fid

    yield cleanfid.fid
    for name in set(sys.modules) - before:
        if name.startswith("cleanfid"):
            del sys.modules[name]


def test_fid_equals_scipy_frechet_distance_of_the_same_features(folders):
    gen, ref = folders
    net = TinyNet().eval()
    ours = fid.compute_fid(gen, ref, feature_extractor=net, device="cpu")
    expected = scipy_fid(features(files_of(gen), net), features(files_of(ref), net))
    assert ours.fid == pytest.approx(expected, rel=1e-6)
    assert ours.fid > 1.0  # the colour statistics differ
    assert (ours.n_generated, ours.n_reference, ours.mode, ours.per_category) == (12, 10, "clean", None)


def test_fid_equals_clean_fids_compute_fid_overall_and_per_category(folders, cleanfid_fid):
    gen, ref = folders
    net = TinyNet().eval()
    ours = fid.compute_fid(gen, ref, per_category=True, feature_extractor=net, device="cpu", batch_size=4)
    theirs = cleanfid_fid.compute_fid(ref, gen, mode="clean", custom_feat_extractor=net, batch_size=4,
                                      device=torch.device("cpu"), num_workers=0, verbose=False)
    assert ours.fid == pytest.approx(theirs, rel=1e-12)
    assert sorted(ours.per_category) == sorted(CATEGORIES)
    for category, (n_gen, n_ref, _, _) in CATEGORIES.items():
        row = ours.per_category[category]
        theirs = cleanfid_fid.compute_fid(os.path.join(ref, category), os.path.join(gen, category), mode="clean",
                                          custom_feat_extractor=net, device=torch.device("cpu"), num_workers=0,
                                          verbose=False)
        assert row["fid"] == pytest.approx(theirs, rel=1e-6)
        assert (row["n_generated"], row["n_reference"]) == (n_gen, n_ref)
        # and independently of clean-fid
        expected = scipy_fid(features(files_of(os.path.join(gen, category)), net),
                             features(files_of(os.path.join(ref, category)), net))
        assert row["fid"] == pytest.approx(expected, rel=1e-6)


def test_clean_preprocessing_is_clean_fids(tmp_path, cleanfid_fid):
    """A grey, non-square image: RGB conversion and clean-fid's PIL bicubic float resize."""
    from cleanfid.resize import build_resizer
    from cleanfid.utils import ResizeDataset

    path = str(tmp_path / "grey.png")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (23, 37), dtype=np.uint8)).save(path)
    ours = fid.load_clean(path)
    assert ours.shape == (3, 299, 299) and ours.dtype == np.float32
    rgb = np.array(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(ours, build_resizer("clean")(rgb).transpose(2, 0, 1))
    np.testing.assert_array_equal(ours, ResizeDataset([path], mode="clean")[0].numpy())
    assert not np.array_equal(ours.astype(np.uint8), ours)  # not quantised after resizing


def test_inception_wrapper_is_clean_fids(tmp_path):
    from cleanfid.downloads_helper import inception_url
    from cleanfid.inception_torchscript import InceptionV3W

    assert fid.INCEPTION_URL == inception_url
    torch.jit.script(TinyNet(dim=2048)).save(str(tmp_path / fid.INCEPTION_FILE))
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 3, 299, 299)).astype(np.float32))
    with torch.no_grad():
        theirs = InceptionV3W(str(tmp_path), download=False)(x)
        ours = fid.inception_extractor(fid.find_inception(str(tmp_path)), "cpu")(x)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_user_errors_name_the_category_or_folder(folders, tmp_path):
    gen, ref = folders
    net = TinyNet().eval()
    save_images(tmp_path / "gen" / "animals", ["a0", "a1"], 50.0, seed=5)
    save_images(tmp_path / "gen" / "plants", ["p0", "p1"], 50.0, seed=6)
    with pytest.raises(UserError, match=r"categories \['plants'\] of .* are missing in .*ref"):
        fid.compute_fid(str(tmp_path / "gen"), ref, per_category=True, feature_extractor=net)
    save_images(tmp_path / "flat", ["x0", "x1"], 50.0, seed=7)
    with pytest.raises(UserError, match="images outside category folders"):
        fid.compute_fid(str(tmp_path / "flat"), ref, per_category=True, feature_extractor=net)
    save_images(tmp_path / "gen2" / "animals", ["b0", "b1"], 50.0, seed=8)
    os.makedirs(tmp_path / "gen2" / "people")
    with pytest.raises(UserError, match="category folder .*people holds 0 images"):
        fid.compute_fid(str(tmp_path / "gen2"), ref, per_category=True, feature_extractor=net)
    np.savez(tmp_path / "stats.npz", mu=np.zeros(DIM), sigma=np.eye(DIM))
    with pytest.raises(UserError, match="--per_category needs --reference to be a folder"):
        fid.compute_fid(gen, str(tmp_path / "stats.npz"), per_category=True, feature_extractor=net)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(DIM))
    with pytest.raises(UserError, match="expected mu and sigma"):
        fid.compute_fid(gen, str(tmp_path / "bad.npz"), feature_extractor=net)


def tiny_clip(directory, seed=4):
    """A random CLIP model with a byte-level tokenizer (no merges) and a 16-px image processor."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[ch + suffix] = len(vocab)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1, **small),
                        vision_config=dict(image_size=16, patch_size=8, **small), projection_dim=8)
    torch.manual_seed(seed)  # one whose cosines have both signs and a positive mean
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


def clip_reference(model, processor, files, prompts):
    """torchmetrics' definition, directly: max(100 * mean cosine(image, text), 0)."""
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    inputs = processor(text=list(prompts), images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"])
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    image, text = getattr(image, "pooler_output", image), getattr(text, "pooler_output", text)
    cos = torch.nn.functional.cosine_similarity(image, text).numpy().astype(np.float64)
    return max(100 * cos.mean(), 0.0), cos


def write_prompts(path, files):
    """MJHQ-30K's meta_data.json shape: id -> {"prompt", "category"}."""
    words = ["a red cat", "two blue birds over water", "an old man reading", "green hills at dawn"]
    table = {os.path.splitext(os.path.basename(f))[0]: {"prompt": words[i % 4] + f" {i}",
                                                         "category": os.path.basename(os.path.dirname(f))}
             for i, f in enumerate(files)}
    path.write_text(json.dumps(table))


def test_clip_score_equals_direct_computation(folders, tmp_path):
    gen, _ = folders
    model, processor = tiny_clip(tmp_path / "clip")
    files = files_of(gen)
    write_prompts(tmp_path / "meta.json", files)
    prompts = fid.read_prompts(str(tmp_path / "meta.json"), files)
    expected, cos = clip_reference(model, processor, files, prompts)
    assert expected > 0 and cos.min() < 0 < cos.max()  # the clamp is on the mean, as torchmetrics has it
    ours = fid.clip_score(files, prompts, str(tmp_path / "clip"), batch_size=5, device="cpu")
    assert ours == pytest.approx(expected, rel=1e-5)


def cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env.pop("LIQUID_JAX_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "liquid_jax.cli", "eval", "fid", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fake_inception(tmp_path_factory):
    """A TorchScript file where clean-fid's Inception would be: the stand-in network, 4-d."""
    folder = tmp_path_factory.mktemp("inception")
    torch.jit.script(TinyNet()).save(str(folder / fid.INCEPTION_FILE))
    return str(folder / fid.INCEPTION_FILE)


def test_cli_per_category_and_clip_score_to_json(folders, fake_inception, tmp_path):
    gen, ref = folders
    model, processor = tiny_clip(tmp_path / "clip")
    write_prompts(tmp_path / "meta.json", files_of(gen))
    out = tmp_path / "results" / "fid.json"
    done = cli(f"--generated={gen}", f"--reference={ref}", "--per_category", f"--inception={fake_inception}",
               "--num_workers=2", f"--out={out}", f"--clip_model={tmp_path / 'clip'}",
               f"--prompts={tmp_path / 'meta.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert sorted(os.listdir(out.parent)) == ["fid.json"]
    layers = torch.jit.load(fake_inception).layers
    expected = scipy_fid(features(files_of(gen), layers, normalise=True), features(files_of(ref), layers, True))
    assert summary["fid"] == pytest.approx(expected, rel=1e-6)
    for category in CATEGORIES:
        expected = scipy_fid(features(files_of(os.path.join(gen, category)), layers, True),
                             features(files_of(os.path.join(ref, category)), layers, True))
        assert summary["per_category"][category]["fid"] == pytest.approx(expected, rel=1e-6)
    assert (summary["n_generated"], summary["n_reference"], summary["mode"]) == (12, 10, "clean")
    assert summary["feature_extractor"].startswith(fid.INCEPTION_FILE)
    prompts = fid.read_prompts(str(tmp_path / "meta.json"), files_of(gen))
    assert summary["clip_score"] == pytest.approx(clip_reference(model, processor, files_of(gen), prompts)[0],
                                                  rel=1e-5)
    assert f"FID {summary['fid']:.4f}" in done.stdout and "people" in done.stdout


def test_cli_reference_statistics_npz(folders, fake_inception, tmp_path):
    gen, ref = folders
    layers = torch.jit.load(fake_inception).layers
    ref_features = features(files_of(ref), layers, normalise=True)
    np.savez_compressed(tmp_path / "ref_stats.npz", mu=ref_features.mean(0), sigma=np.cov(ref_features, rowvar=False))
    done = cli(f"--generated={gen}", f"--reference={tmp_path / 'ref_stats.npz'}",
               f"--inception={os.path.dirname(fake_inception)}", "--num_workers=0", f"--out={tmp_path / 'f.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "f.json").read_text())
    expected = scipy_fid(features(files_of(gen), layers, normalise=True), ref_features)
    assert summary["fid"] == pytest.approx(expected, rel=1e-6)
    assert summary["n_reference"] is None and summary["per_category"] is None


def test_cli_user_errors_exit_2(folders, tmp_path):
    gen, ref = folders
    missing = tmp_path / "weights"
    done = cli(f"--generated={gen}", f"--reference={ref}", f"--inception={missing}/")
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert f"{missing / fid.INCEPTION_FILE} not found" in line and fid.INCEPTION_URL in line
    os.makedirs(tmp_path / "empty")
    done = cli(f"--generated={tmp_path / 'empty'}", f"--reference={ref}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"--generated {tmp_path / 'empty'} holds 0 images" in done.stderr.strip().splitlines()[-1]
    done = cli(f"--generated={gen}", f"--reference={ref}", f"--clip_model={tmp_path}")
    assert done.returncode == 2 and "--clip_model and --prompts go together" in done.stderr
