"""Data: pre-tokenized ArrayRecord shards and the Grain training pipeline.

Offline: ``pretokenize_images`` (images + captions -> VQGAN codes, inputs from
``captioned_images``) and ``pretokenize_text`` (raw documents) write shards of
``records``. Online: ``pipeline`` mixes ``sources``, builds Liquid ``sequences`` and
``packing`` fills fixed-length rows; ``pipeline.make_iterator`` is the trainer's entry.
"""
