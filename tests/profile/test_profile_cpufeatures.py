"""CPU features from /proc/cpuinfo flags, and the report notes they lead to."""

from __future__ import annotations

from pathlib import Path

from bench.cpufeatures import cpu_features, from_flags, read_cpuinfo, variant_note, variant_note_kind

SKYLAKE = "fpu sse sse2 avx avx2 fma f16c avx512f avx512cd avx512bw"
SAPPHIRE = SKYLAKE + " avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16"
GRAVITON = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp sve i8mm bf16"


def test_flags_map_to_bench_names() -> None:
    assert from_flags(SKYLAKE.split()) == ["avx2", "fma", "f16c", "avx512f"]
    assert {"avx512_vnni", "avx512_fp16", "amx_int8", "amx_bf16"} <= set(from_flags(SAPPHIRE.split()))
    assert {"neon", "arm_fp16", "arm_dotprod", "arm_i8mm", "arm_bf16", "sve"} == set(from_flags(GRAVITON.split()))


def test_cpuinfo_file_is_read_for_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(f"processor\t: 0\nmodel name\t: Xeon\nflags\t\t: {SKYLAKE}\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text(f"processor\t: 0\nFeatures\t: {GRAVITON}\nCPU implementer\t: 0x41\n")
    assert read_cpuinfo(str(x86)) == SKYLAKE.split() and cpu_features(str(x86)) == from_flags(SKYLAKE.split())
    assert "sve" in (cpu_features(str(arm)) or [])
    assert read_cpuinfo(str(tmp_path / "missing")) is None


def test_notes_only_where_the_cpu_lacks_the_feature() -> None:
    skylake, sapphire = from_flags(SKYLAKE.split()), from_flags(SAPPHIRE.split())
    assert variant_note_kind("int8", "cpu", skylake) == "int8"
    assert "without VNNI" in (variant_note("int8", "cpu", skylake) or "")
    assert variant_note_kind("int8", "cpu", sapphire) is None
    assert variant_note_kind("fp16", "cpu", skylake) == "fp16" and variant_note_kind("fp16", "cpu", sapphire) is None
    assert variant_note_kind("q4f16", "cpu", skylake) == "q4f16" and variant_note_kind("q4", "cpu", skylake) == "q4"
    assert variant_note_kind("uint8", "cpu", from_flags(GRAVITON.split())) is None  # ARM dot product
    assert variant_note_kind("fp32", "cpu", skylake) is None
    assert variant_note_kind("int8", "cuda", skylake) is None  # a GPU cell: the CPU does not compute
    assert variant_note_kind("int8", "cpu", None) is None  # unknown features: no claim


def test_fingerprint_and_bench_info_record_the_features() -> None:
    from click.testing import CliRunner

    from bench.cli import main
    from bench.environment import fingerprint

    features = fingerprint()["cpu"]["features"]
    assert features == cpu_features()
    out = CliRunner().invoke(main, ["info"]).output
    assert "CPU features: " in out
