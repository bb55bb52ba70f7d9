"""FLOPs from shapes: each formula against a hand count, and a whole conv net against its analytic count."""

from __future__ import annotations

from pathlib import Path

import pytest
from convnet import analytic_flops, make_convnet

from bench.profile.flops import is_counted, model_flops, node_flops


def test_conv_counts_each_output_over_its_group_inputs() -> None:
    # 1×64×56×56 output, 3×3 kernel over 32 input channels per group (groups=2 of 64): 2 MACs per term
    assert node_flops("Conv", [[1, 64, 56, 56], [64, 32, 3, 3]], [[1, 64, 56, 56]]) == 2 * 64 * 56 * 56 * 32 * 9
    # depthwise: one input channel per output
    assert node_flops("FusedConv", [[2, 8, 10, 10], [8, 1, 3, 3]], [[2, 8, 10, 10]]) == 2 * 2 * 8 * 100 * 9
    # QLinearConv keeps its weight at input 3
    q = node_flops("QLinearConv", [[1, 4, 8, 8], [1], [1], [16, 4, 1, 1]], [[1, 16, 8, 8]])
    assert q == 2 * 16 * 64 * 4


def test_conv_transpose_scatters_each_input() -> None:
    assert node_flops("ConvTranspose", [[1, 16, 7, 7], [16, 8, 4, 4]], [[1, 8, 14, 14]]) == 2 * 16 * 49 * 8 * 16


def test_matmul_reads_k_from_a_whatever_the_transposes() -> None:
    assert node_flops("MatMul", [[4, 197, 768], [768, 3072]], [[4, 197, 3072]]) == 2 * 4 * 197 * 3072 * 768
    # Gemm with transA: A is [K, M]
    assert node_flops("Gemm", [[768, 10], [768, 5]], [[10, 5]]) == 2 * 10 * 5 * 768
    # 4-bit weights are packed: K comes from A, not from B's blob shape
    assert node_flops("MatMulNBits", [[1, 197, 768], [3072, 24, 16]], [[1, 197, 3072]]) == 2 * 197 * 3072 * 768
    assert node_flops("MatMulBnb4", [[197, 768], [1179648]], [[197, 3072]]) == 2 * 197 * 3072 * 768
    assert node_flops("MatMul", [[64], [64, 2]], [[2]]) == 2 * 2 * 64


def test_attention_and_multi_head_attention() -> None:
    b, s, h = 2, 197, 768
    projection, scores, mix = 2 * b * s * h * 3 * h, 2 * b * s * s * h, 2 * b * s * s * h
    assert node_flops("Attention", [[b, s, h], [h, 3 * h], [3 * h]], [[b, s, h]]) == projection + scores + mix
    assert node_flops("MultiHeadAttention", [[b, s, h], [b, s, h], [b, s, h]], [[b, s, h]]) == scores + mix


def test_unknown_ops_and_shapes_are_not_guessed() -> None:
    assert node_flops("Relu", [[1, 64]], [[1, 64]]) is None and not is_counted("Relu")
    assert node_flops("MatMul", [None, [64, 2]], [[1, 2]]) is None and is_counted("MatMul")
    assert node_flops("Conv", [[1, 3, 8, 8], [4, 3, 0, 3]], [[1, 4, 8, 8]]) is None


@pytest.mark.parametrize("batch", [1, 4])
def test_conv_net_matches_its_analytic_count(tmp_path: Path, batch: int) -> None:
    path = make_convnet(tmp_path / "c.onnx")
    flops = model_flops(path, batch)
    expected = analytic_flops(batch, 64, (32, 64, 64, 64))
    assert abs(flops.total_flops - expected) <= 0.02 * expected
    assert flops.total_flops == expected  # exact: every counted node has its shapes
    assert flops.unresolved == [] and flops.not_counted == ["GlobalAveragePool", "Relu", "Reshape"]
