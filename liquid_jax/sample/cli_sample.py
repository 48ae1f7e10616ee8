"""Flags and helpers shared by the ``liquid-jax sample ...`` subcommands.

Each subcommand module calls ``define_flags`` at import with its own sampling defaults
and then ``load_model`` / ``read_prompts`` in ``main``.
"""

from __future__ import annotations

from typing import Any

from absl import app, flags

from liquid_jax import paths
from liquid_jax.sample.speculative import COUPLINGS

FLAGS = flags.FLAGS


def define_flags(*, temperature: float, top_k: int, top_p: float) -> None:
    """--checkpoint, --dtype, --mesh, --seed and the sampling filters."""
    flags.DEFINE_string("checkpoint", None, "liquid_jax checkpoint, training workdir or Hugging Face "
                        "model directory.", required=True)
    flags.DEFINE_integer("step", None, "With a training workdir: its checkpoint step (default: newest intact).")
    flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Parameter and compute dtype.")
    flags.DEFINE_list("mesh", None, "Mesh shape data,fsdp,tensor (one entry may be -1), e.g. "
                      "-1,1,4 on a TPU slice; default: one device (eval commands: data-parallel over "
                      "this host's devices).")
    flags.DEFINE_integer("seed", 0, "Random seed of the sampler.")
    flags.DEFINE_float("temperature", temperature, "Softmax temperature (0: greedy).")
    flags.DEFINE_integer("top_k", top_k, "Keep the k most likely tokens (0: all).")
    flags.DEFINE_float("top_p", top_p, "Keep the smallest set with this total probability (1: all).")
    flags.DEFINE_string("vqgan", None, "VQGAN: liquid_jax checkpoint, train-vqgan workdir, Chameleon "
                        "vqgan.ckpt or HF directory.")


def sampling_flags() -> dict[str, Any]:
    return dict(temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed)


def _mesh(local: bool):
    import jax

    from liquid_jax.sharding import make_mesh

    devices = jax.local_devices() if local else jax.devices()
    if not FLAGS.mesh:
        return make_mesh(devices=devices) if local and len(devices) > 1 else None
    try:
        shape = [int(s) for s in FLAGS.mesh]
    except ValueError:
        raise app.UsageError(f"--mesh must be integers data,fsdp,tensor; got {FLAGS.mesh}") from None
    return make_mesh(shape, devices=devices)


def load_model(local: bool = False):
    """The LiquidLM of --checkpoint (sharded when --mesh is given). ``local``: over this
    process's devices only (data-parallel over all of them without --mesh), for work that
    each host does on its own."""
    import liquid_jax

    return liquid_jax.load(FLAGS.checkpoint, dtype=FLAGS.dtype, mesh=_mesh(local), step=FLAGS.step)


def load_codec(required: bool):
    """The ImageCodec of --vqgan, or None when it is not given and not ``required``."""
    if FLAGS.vqgan is None:
        if required:
            raise app.UsageError("--vqgan is required for this command")
        return None
    import liquid_jax

    return liquid_jax.load_vqgan(FLAGS.vqgan)


def define_prompt_flags() -> None:
    """--prompt (repeatable) and --prompts_file."""
    flags.DEFINE_multi_string("prompt", None, "Text prompt (repeatable).")
    flags.DEFINE_string("prompts_file", None, "File with one prompt per line.")


def read_prompts() -> list[str]:
    """--prompt values plus the non-empty lines of --prompts_file."""
    prompts = list(FLAGS.prompt or [])
    if FLAGS.prompts_file:
        try:
            text = paths.resolve(FLAGS.prompts_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"--prompts_file {FLAGS.prompts_file} does not exist") from None
        prompts += [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise app.UsageError("give at least one --prompt or a --prompts_file")
    return prompts


def define_image_flags() -> None:
    """--guidance_scale (or --cfg, its former name), --grid / --size and speculative
    decoding, as ``sample t2i`` takes them."""
    flags.DEFINE_float("guidance_scale", 7.0, "Classifier-free guidance scale (0: no guidance).")
    flags.DEFINE_alias("cfg", "guidance_scale")
    flags.DEFINE_string("grid", None, "Code grid HxW (default: the model's trained grid; 32x32 = 512 px "
                        "with Chameleon's VQGAN).")
    flags.DEFINE_string("size", None, "Image size HEIGHTxWIDTH in pixels instead of --grid (e.g. 384x640; "
                        "whole codes of the VQGAN).")
    flags.DEFINE_integer("speculative_window", 0, "Speculative Jacobi decoding with windows of this many "
                         "tokens (0: token by token; same distribution, fewer forward passes; see README).")
    flags.DEFINE_enum("coupling", "gumbel", list(COUPLINGS),
                      "How speculative redrafts are coupled to the previous drafts.")
    flags.DEFINE_string("draft_library", None, "Pre-tokenized image shards (a directory, glob or comma "
                        "list) that speculative decoding also drafts from, e.g. the training images.")


def parse_grid(text: str, flag: str = "--grid") -> tuple[int, int]:
    """"HxW" -> (h, w)."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise app.UsageError(f"{flag} must look like 32x32, got {text!r}") from None
    if h < 1 or w < 1:
        raise app.UsageError(f"{flag} must be positive, got {text!r}")
    return h, w


def image_settings(codec) -> dict[str, Any]:
    """``generate_images`` keyword arguments from the image and sampling flags."""
    if FLAGS.grid and FLAGS.size:
        raise app.UsageError("give --grid or --size, not both")
    grid = parse_grid(FLAGS.grid) if FLAGS.grid else None
    if FLAGS.size:
        grid = codec.grid_for(*parse_grid(FLAGS.size, "--size"))
    return dict(guidance_scale=FLAGS.guidance_scale or None, grid=grid, speculative_window=FLAGS.speculative_window,
                coupling=FLAGS.coupling, draft_library=FLAGS.draft_library, **sampling_flags())
