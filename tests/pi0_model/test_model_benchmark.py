"""The latency benchmark script (tiny config on CPU; the real size on CUDA when one is present)."""

import re

import pytest
import torch

from pi0_model.benchmark import main, parse_args


def phase_rows(output: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in output.splitlines():
        match = re.match(r"(preprocess|prefix|denoise|postprocess|total)\s+([\d.]+)\s+([\d.]+)", line)
        if match:
            rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return rows


@pytest.mark.parametrize("cameras", [1, 3])
def test_tiny_cpu_benchmark_prints_latency_and_memory(capsys, cameras):
    args = [
        "--config",
        "tiny",
        "--device",
        "cpu",
        "--cameras",
        str(cameras),
        "--steps",
        "2",
        "--iterations",
        "3",
        "--warmup",
        "1",
    ]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert f"cameras={cameras}" in output and "steps=2" in output
    rows = phase_rows(output)
    assert set(rows) == {"preprocess", "prefix", "denoise", "postprocess", "total"}
    assert all(p50 <= p95 for p50, p95 in rows.values())
    assert rows["total"][0] >= rows["denoise"][0] > 0
    assert re.search(r"peak memory: [\d.]+ MB", output)


def test_rtc_benchmark_runs(capsys):
    assert (
        main(
            [
                "--config",
                "tiny",
                "--device",
                "cpu",
                "--cameras",
                "1",
                "--steps",
                "2",
                "--iterations",
                "2",
                "--warmup",
                "1",
                "--rtc",
                "5",
            ]
        )
        == 0
    )
    assert "rtc=5" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.slow
def test_real_pi0_bf16_on_cuda(capsys):
    args = ["--config", "pi0", "--device", "cuda", "--dtype", "bfloat16", "--cameras", "3", "--iterations", "5"]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "3238.0M parameters" in output
    assert "torch.cuda.max_memory_allocated" in output
    assert torch.cuda.max_memory_allocated() > 6e9  # the bf16 weights alone are ~6.5 GB


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        ([], None),
        (["--compile-mode", "reduce-overhead"], "reduce-overhead"),  # the README's GPU command: compiles
        (["--compile"], "max-autotune"),
        (["--compile", "--compile-mode", "default"], "default"),
        (["--compile-mode", "none"], None),
    ],
)
def test_a_compile_mode_alone_enables_compilation(flags, mode):
    args = parse_args(["--config", "tiny", "--device", "cpu", *flags])
    assert args.compile_mode == mode
    assert args.compile is (mode is not None)


def test_the_readme_benchmark_command_parses_to_a_compiled_run():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    prefix = "python -m pi0_model.benchmark --config pi0"
    command = next(line for line in readme.splitlines() if line.startswith(prefix))
    args = parse_args([arg.replace("cuda", "cpu") for arg in command.split()[3:]])
    assert args.compile and args.compile_mode == "reduce-overhead"
