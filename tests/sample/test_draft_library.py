"""The draft library read from pre-tokenized image shards (liquid_jax.sample.draft_library)."""

import dataclasses
import os

import numpy as np
import pytest

from helpers.data_support import image_records, write_image_shards, write_shards
from liquid_jax.data.sources import DataError
from liquid_jax.sample.draft_library import read_draft_library


def test_distinct_grids_most_frequent_first_other_grids_and_damage_skipped(tmp_path, caplog):
    rng = np.random.default_rng(0)
    square = image_records(rng, 6, (2, 2), 16, "sq")
    repeats = [dataclasses.replace(square[3], key=f"again-{i}") for i in range(3)]
    repeats += [dataclasses.replace(square[5], key="once-more")]
    wide = image_records(rng, 4, (2, 3), 16, "wide")
    write_image_shards(str(tmp_path / "images"), square + repeats + wide, num_shards=2)
    write_shards(str(tmp_path / "images"), "broken", [b"not a record"], num_shards=1)

    library = read_draft_library(str(tmp_path / "images"), (2, 2), num_image_codes=16)

    assert library.dtype == np.int32 and library.shape == (6, 4)
    np.testing.assert_array_equal(library[0], square[3].codes)  # 4 times
    np.testing.assert_array_equal(library[1], square[5].codes)  # twice
    assert {tuple(r) for r in library} == {tuple(r.codes) for r in square}
    assert "other_grid': 4" in caplog.text and "corrupt': 1" in caplog.text
    assert read_draft_library(str(tmp_path / "images"), (2, 2), 16, max_images=2).shape[0] <= 2


def test_no_record_at_the_grid_is_refused_naming_the_path(tmp_path):
    folder = str(tmp_path / "wide")
    write_image_shards(folder, image_records(np.random.default_rng(1), 3, (2, 3), 16, "w"), num_shards=1)
    with pytest.raises(DataError, match=r"draft library .*wide.* no image record at the 4x4 grid"):
        read_draft_library(folder, (4, 4), num_image_codes=16)
    not_a_shard = tmp_path / "captions.array_record"
    not_a_shard.write_text('{"caption": "a cat"}\n')
    with pytest.raises(DataError, match="unreadable_shard': 1"):
        read_draft_library(str(not_a_shard), (2, 3), num_image_codes=16)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_draft_library(os.path.join(folder, "missing"), (2, 3), num_image_codes=16)
