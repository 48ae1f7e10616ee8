"""`liquid-jax plan`: ahead-of-time compilation of the train step for TPU topologies."""

import dataclasses

import pytest

from helpers import train_support as support
from liquid_jax.model.config import TransformerConfig, load_config_file
from liquid_jax.model.transformer import param_count
from liquid_jax.train import chips, flops, plan

pytest.importorskip("libtpu", reason="TPU ahead-of-time compilation needs jax[tpu] (libtpu)")


def tiny(**model_changes):
    config = load_config_file(support.TINY_CONFIG, "smoke")
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


def test_json_report_has_the_documented_keys(tmp_path):
    config = tiny()
    config.data.seq_len = 128  # one splash block: the kernel runs
    report = plan.plan(config, "v5e:4x4")
    document = dataclasses.asdict(report)
    for key in ("attention", "remat", "fits", "total_bytes", "hbm_bytes", "step_time_lower_bound_s",
                "compiled_flops", "compiled_bytes_accessed", "model_flops_per_device", "mfu_ceiling"):
        assert document[key] is not None, key
    assert report.attention == "splash"  # "auto" on a TPU slice, rows of whole blocks
    chip = chips.CHIPS["v5e"]
    compute = report.step_flops_per_device / chip.bf16_flops
    assert report.step_time_lower_bound_s >= compute
    assert report.mfu_ceiling == pytest.approx(
        report.model_flops_per_device / chip.bf16_flops / report.step_time_lower_bound_s)


def test_sweep_plans_each_attention_and_remat_and_marks_the_fastest_that_fits():
    config = tiny()
    config.data.seq_len = 128
    result = plan.sweep(config, "v5e:4x4", remats=("full", "minimal"), progress=False)
    assert [(r.attention, r.remat) for r in result.rows] == [
        ("xla", "full"), ("xla", "minimal"), ("splash", "full"), ("splash", "minimal")]
    fitting = [r for r in result.rows if r.fits]
    assert result.best is min(fitting, key=lambda r: r.step_time_lower_bound_s)
    assert result.to_json()["best"] == dataclasses.asdict(result.best)
    assert "<- best" in result.table()


def test_gpu_targets_without_a_gpu_compiler_are_estimated_and_say_so():
    config = tiny()
    config.data.seq_len = 128
    report = plan.plan(config, "8xH100")
    assert report.estimate and "ANALYTIC ESTIMATE" in report.summary()
    assert report.attention == "flash_gpu" and report.devices == 8
    model = TransformerConfig.from_dict(config.model.to_dict())
    params_and_adam = 3 * 4 * param_count(model, include_padding=True)  # data parallel: replicated
    assert report.argument_bytes >= params_and_adam
    assert report.step_time_lower_bound_s > 0


def test_step_flops_count_what_each_policy_recomputes():
    model = TransformerConfig(family="llama", vocab_size=1000, d_model=64, num_layers=2, num_heads=4,
                              num_kv_heads=2, head_dim=16, mlp_dim=128)
    seq = 256
    # forward matmul FLOPs per token, by hand
    projections = 2 * 2 * 64 * 16 * (2 * 4 + 2 * 2)
    attention = 2 * 2 * seq * 4 * 16
    mlp = 2 * 2 * 3 * 64 * 128
    head = 2 * 64 * 1000
    forward = projections + attention + mlp + head
    assert flops.training_flops_per_token(model, seq) == 3 * forward
    assert flops.step_flops_per_token(model, seq, "none", kernel=False) == 3 * forward
    assert flops.step_flops_per_token(model, seq, "full", kernel=False) == 3 * forward + projections + attention + mlp
    assert flops.step_flops_per_token(model, seq, "minimal", kernel=False) == 3 * forward + attention / 2
    # a kernel's backward recomputes the scores itself; "minimal" keeps its output
    assert flops.step_flops_per_token(model, seq, "minimal", kernel=True) == 3 * forward + attention / 2
    assert flops.step_flops_per_token(model, seq, "dots", kernel=True) == 3 * forward + 1.5 * attention
