"""`liquid-jax plan`: ahead-of-time compilation of the train step for TPU topologies."""

import pytest

import _train_support as support
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.transformer import param_count
from liquid_jax.train import config as config_lib
from liquid_jax.train import plan

pytest.importorskip("libtpu", reason="TPU ahead-of-time compilation needs jax[tpu] (libtpu)")


def tiny(**model_changes):
    config = config_lib.load_config_file(support.TINY_CONFIG, "smoke")
    config.data.batch_size = 16
    config.model.scan_layers = True
    for key, value in model_changes.items():
        config.model[key] = value
    return config


@pytest.fixture(scope="module")
def replicated():
    config = tiny()
    return config, plan.plan(config, "v5e:4x4")


def test_tiny_run_fits_and_reports_memory(replicated):
    config, report = replicated
    assert report.fits and report.devices == 16 and report.mesh == {"data": 16, "fsdp": 1, "tensor": 1}
    model = TransformerConfig.from_dict(config.model.to_dict())
    # Pure data parallelism: every device holds fp32 params plus Adam's two moments.
    replicated_state = 3 * 4 * param_count(model, include_padding=True)
    assert report.argument_bytes >= replicated_state
    assert report.total_bytes >= report.argument_bytes + report.temp_bytes - report.alias_bytes
    assert report.compiled_flops > 0
    text = report.summary()
    assert "arguments" in text and "temporaries" in text and "of 16.0 GiB HBM" in text


def test_fsdp_divides_the_state_over_devices(replicated):
    config = tiny()
    config.mesh.data, config.mesh.fsdp = 1, -1
    sharded = plan.plan(config, "v5e:4x4")
    assert sharded.fits
    assert sharded.argument_bytes < replicated[1].argument_bytes / 4


@pytest.mark.parametrize("topology,chips", [("v4-32", 16), ("v5:2x2x2", 8)])
def test_megacore_generations_plan_one_device_per_chip(topology, chips):
    report = plan.plan(tiny(), topology)
    assert report.fits and report.devices == chips and report.mesh["data"] == chips


def test_compiler_refusal_is_reported_as_not_fitting():
    # ~30B params: the TPU compiler itself fails with RESOURCE_EXHAUSTED
    config = tiny(d_model=8192, mlp_dim=65536, num_layers=16, num_heads=64, num_kv_heads=64, head_dim=128)
    config.mesh.data, config.mesh.fsdp = 1, -1
    report = plan.plan(config, "v5e:4x4")
    assert not report.fits
    assert "RESOURCE_EXHAUSTED" in report.error
    assert "DOES NOT FIT in 16.0 GiB" in report.summary()


@pytest.mark.slow  # one more large compile
def test_compiled_memory_above_hbm_is_reported_as_not_fitting():
    # ~10B params: compiles, but arguments + temporaries exceed a v5e chip's 16 GiB
    config = tiny(d_model=4096, mlp_dim=65536, num_layers=12, num_heads=32, num_kv_heads=32, head_dim=128)
    config.mesh.data, config.mesh.fsdp = 1, -1
    report = plan.plan(config, "v5e:4x4")
    assert not report.fits
    assert report.total_bytes > 16 * plan.GiB and "needs" in report.error


def test_topology_names():
    assert plan.resolve_topology("v5p-128").name == "v5:4x4x4"
    assert plan.resolve_topology("v5e-256").name == "v5e:16x16"
    assert plan.resolve_topology("v4-32").name == "v4:2x2x4"
    assert plan.resolve_topology("8xH100").platform == "cuda"
    assert plan.resolve_topology("v5:4x4x8").hbm_bytes == 95 * plan.GiB
    with pytest.raises(ValueError, match="unknown topology 'v9-8'.*v5p-128"):
        plan.resolve_topology("v9-8")


def test_batch_that_does_not_split_over_devices_is_an_error():
    config = tiny()
    config.data.batch_size = 8
    with pytest.raises(ValueError, match="data.batch_size 8 must be a multiple of the 16"):
        plan.plan(config, "v5e:4x4")
