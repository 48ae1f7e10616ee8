"""Every on-disk format of ours, read and written in one place.

- ``card``         the JSON card of a checkpoint (kinds, fields, format version) and
                   where a checkpoint keeps its tokenizer files;
- ``trees``        nnx Variables unwrapped to the plain arrays that are stored, and back;
- ``directory``    a checkpoint directory: card + Orbax PyTree of parameters, written
                   atomically (in parts), read whole, per tensor or sharded;
- ``model``        language-model checkpoints (card, tokenizer, parameters) and the model
                   of a training step;
- ``vqgan``        VQGAN checkpoints, and the final model of a train-vqgan workdir;
- ``train_state``  a training workdir's resumable checkpoints (state, data iterator,
                   config, card).

Other formats (Hugging Face, taming) are converted by ``liquid_jax.convert``.
"""
