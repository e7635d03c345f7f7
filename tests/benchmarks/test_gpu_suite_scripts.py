"""The GPU suite's benchmark scripts run on the CPU at tiny size (their logic, not GPU results)."""
import importlib.util
import os
import subprocess

import pytest
import torch

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


def script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_td_forward():
    """step_overhead times TargetedDropout.forward by wrapping it; put the original back."""
    from td_fairseq.sparsity.td import TargetedDropout
    forward = TargetedDropout.forward
    yield
    TargetedDropout.forward = forward


def test_step_overhead_reports_every_precision_and_variant(tmp_path, restore_td_forward):
    result = script("step_overhead").main([
        "--size", "tiny", "--tokens", "64", "--length", "8", "--vocab", "60", "--steps", "1", "--warmup", "0",
        "--precision", "fp32", "bf16", "memory-efficient-fp16", "--variants", "td_weight", "td_pattern24",
        "td_none", "stock", "--threads", "1", "--clock", "cpu", "--json", str(tmp_path / "out.json")])
    assert [row["precision"] for row in result["rows"]] == ["fp32", "bf16", "memory-efficient-fp16"]
    for row in result["rows"]:
        assert set(row["median_seconds"]) == {"td_weight", "td_pattern24", "td_none", "stock"}
        assert {"td_weight/td_none", "td_pattern24/stock", "td_none/stock"} <= set(row)
        assert row["td_forward_seconds"]["td_weight"] > 0 and "td_none" in row["td_forward_seconds"]
    assert (tmp_path / "out.json").exists()


def test_half_precision_check_passes_in_bf16_on_the_cpu():
    # bf16: the plugin's autocast (fp32 weights); bf16-fairseq: fairseq's own path (bf16 weights)
    assert script("gpu_fp16_check").main(["--cpu-smoke", "--updates", "2", "--precision", "bf16",
                                          "bf16-fairseq"]) == 0


def test_semi_structured_speed_smoke_falls_back_to_dense_and_matches():
    result = script("semi_structured_speed").main(["--smoke", "--backend", "cusparselt", "cutlass"])
    assert {row["part"] for row in result["forward"]} == {"encoder", "decoder"}
    assert set(result["decode"]) == {"dense", "dense_twin", "sparse_cusparselt", "sparse_cutlass"}
    for check in result["identical"].values():
        assert check["identical"] == 1.0 and check["max_logit_difference"] == 0
    assert "unavailable" in result["conversion"]["cusparselt"]["notice"]
    assert not torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS  # the switch is put back


def test_gpu_suite_is_valid_bash():
    assert subprocess.run(["bash", "-n", os.path.join(BENCHMARKS, "gpu_suite.sh")]).returncode == 0
