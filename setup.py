"""liquid_jax: Liquid (arXiv 2412.04332) in JAX / Flax NNX."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "array-record>=0.8.6",
    "tensorflow-datasets>=4.9.10",
    "etils[epath]>=1.15",
    "importlib_resources",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.21",
    "ml-collections>=1.1.0",
    "absl-py",
    "chex>=0.1.92",
    "numpy",
    "safetensors>=0.5",
    "msgpack>=1.0",
    "pyarrow>=14",
    "pillow>=11",
    "pyyaml",
    "tqdm",
    "tensorboardX",
    "matplotlib",
]

# Evaluation tools of the field (liquid-jax eval fid / text / vqa); `pip install -e ".[eval]"`.
EVAL = [
    "shortuuid",  # answer ids of LLaVA answer files (eval vqa)
    # eval fid: clean-fid's dependencies; clean-fid itself goes in with
    # `pip install --no-deps clean-fid==0.1.35` (it requires torchvision, which clean mode never uses)
    "torch>=2.1",
    "scipy",
    "requests",
    "torchmetrics>=1.4",  # CLIP score (with transformers)
    "lm-eval>=0.4.13",  # eval text: lm-evaluation-harness
]

TEST = EVAL + [
    "pytest>=8",
    "accelerate>=1.0",  # lm-eval's "hf" backend, the reference of tests/eval/test_eval_text.py
    "torch==2.13.0",
    "transformers>=5.0,<6",
    "scikit-image",
    "portpicker",
    "nbclient",
    "nbformat",
    "ipykernel",
    "jax[tpu]==0.10.2",  # libtpu: ahead-of-time TPU compiles in tests/train/test_plan.py
]

setup(
    name="liquid_jax",
    version="0.1.0",
    description="Liquid: a language model that reads, writes and draws, in JAX / Flax NNX.",
    packages=find_packages(include=["liquid_jax", "liquid_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "eval": EVAL,
        "tpu": ["jax[tpu]==0.10.2"],
        "gpu": ["jax[cuda12]"],
    },
    entry_points={"console_scripts": ["liquid-jax=liquid_jax.cli:main"]},
)
