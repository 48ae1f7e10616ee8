"""``liquid-jax sample understand``: answer questions about images, or caption them.

  liquid-jax sample understand --checkpoint=ckpt/liquid-7b --vqgan=vqgan/ --image=cat.png \\
      --question="What is the animal doing?"
  liquid-jax sample understand --checkpoint=... --vqgan=... --image=a.png --image=b.png --caption
"""

from __future__ import annotations

from absl import app, flags

from liquid_jax.sample import cli_sample

cli_sample.define_flags(temperature=0.0, top_k=0, top_p=1.0)
_IMAGE = flags.DEFINE_multi_string("image", None, "Image file (repeatable).", required=True)
_QUESTION = flags.DEFINE_multi_string(
    "question", None, "Question (one for all images, or one per image).")
_CAPTION = flags.DEFINE_bool("caption", False, "Caption with upstream's prompt instead of a question.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 256, "Longest answer in tokens.")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Square size images are tokenized at (default: the VQGAN's resolution).")


def main(argv: list[str]) -> None:
    del argv
    images = list(_IMAGE.value)
    questions = list(_QUESTION.value or [])
    if _CAPTION.value == bool(questions):
        raise app.UsageError("give either --question (one, or one per --image) or --caption")
    if len(questions) == 1:
        questions *= len(images)
    if not _CAPTION.value and len(questions) != len(images):
        raise app.UsageError(f"{len(questions)} questions for {len(images)} images")
    codec = cli_sample.load_codec(required=True)
    lm = cli_sample.load_model()
    if _CAPTION.value:
        result = lm.caption_images(images, _MAX_NEW.value, codec=codec, image_size=_IMAGE_SIZE.value,
                                   progress=True, **cli_sample.sampling_flags())
    else:
        result = lm.generate_text(questions, _MAX_NEW.value, images=images, codec=codec,
                                  image_size=_IMAGE_SIZE.value, progress=True,
                                  **cli_sample.sampling_flags())
    for image, text in zip(images, result.texts):
        print(f"{image}: {text}")
