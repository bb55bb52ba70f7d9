"""The CPU features that decide which kernels a variant gets (VNNI for int8, native fp16/bf16, AMX, SVE).

Read from /proc/cpuinfo's flags (Linux, x86 ``flags`` or ARM ``Features``); elsewhere from numpy's dispatch
table. Standard library only: bench.environment records them in every fingerprint.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence

# bench's name → the /proc/cpuinfo flags that show it (any one). x86 first, then AArch64.
_CPUINFO: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "f16c": ("f16c",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni", "avx512vnni"),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx_tile": ("amx_tile",),
    "amx_int8": ("amx_int8",),
    "amx_bf16": ("amx_bf16",),
    "neon": ("asimd", "neon"),
    "arm_fp16": ("asimdhp", "fphp"),
    "arm_dotprod": ("asimddp",),
    "arm_i8mm": ("i8mm",),
    "arm_bf16": ("bf16",),
    "sve": ("sve",),
    "sve2": ("sve2",),
}
# numpy's __cpu_features__ names for the same (where /proc/cpuinfo is not there: macOS, Windows)
_NUMPY: dict[str, tuple[str, ...]] = {
    "avx2": ("AVX2",),
    "fma": ("FMA3",),
    "f16c": ("F16C",),
    "avx512f": ("AVX512F",),
    "avx512_vnni": ("AVX512VNNI",),
    "avx512_bf16": ("AVX512BF16",),
    "avx512_fp16": ("AVX512FP16",),
    "neon": ("ASIMD", "NEON"),
    "arm_fp16": ("ASIMDHP",),
    "arm_dotprod": ("ASIMDDP",),
    "arm_i8mm": ("ASIMDFHM",),
    "sve": ("SVE",),
}
FEATURES = tuple(_CPUINFO)


def from_flags(flags: Iterable[str]) -> list[str]:
    """bench's feature names present among /proc/cpuinfo ``flags`` (in FEATURES order)."""
    have = {f.lower() for f in flags}
    return [name for name, aliases in _CPUINFO.items() if have.intersection(aliases)]


def read_cpuinfo(path: str = "/proc/cpuinfo") -> list[str] | None:
    """The first processor's ``flags`` (x86) or ``Features`` (ARM) line, split; None where there is no such file."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return value.split()
    except OSError:
        return None
    return None


def _numpy_features() -> list[str] | None:
    try:  # numpy is imported already wherever a fingerprint is taken; not for `bench --help`
        from numpy._core._multiarray_umath import __cpu_features__ as table
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as table  # type: ignore[no-redef]
        except ImportError:
            return None
    return [name for name, aliases in _NUMPY.items() if any(table.get(a) for a in aliases)]


def cpu_features(path: str = "/proc/cpuinfo") -> list[str] | None:
    """The FEATURES this CPU has; None when neither /proc/cpuinfo nor numpy can tell ("unknown", not "none")."""
    flags = read_cpuinfo(path)
    return from_flags(flags) if flags is not None else _numpy_features()


def has_int8_dot(features: Sequence[str]) -> bool:
    """An int8 dot-product instruction (what makes int8 GEMM faster than fp32 on a CPU)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8", "arm_dotprod", "arm_i8mm"}.intersection(features))


def has_fp16_math(features: Sequence[str]) -> bool:
    return bool({"avx512_fp16", "arm_fp16"}.intersection(features))


def has_bf16_math(features: Sequence[str]) -> bool:
    return bool({"avx512_bf16", "amx_bf16", "arm_bf16"}.intersection(features))


def _kind(variant: str) -> str | None:
    """What a variant's speed depends on, from its name (bench's names: fp16, int8, uint8, q4, q4f16, bnb4, …)."""
    name = variant.lower()
    if "bf16" in name:
        return "bf16"
    if name.startswith(("q4", "bnb4", "int4", "nf4")):
        return "q4f16" if "f16" in name else "q4"
    if "int8" in name or "uint8" in name or name.startswith("q8"):
        return "int8"
    if "fp16" in name or name.endswith("f16"):
        return "fp16"
    return None


def variant_note(variant: str, provider: str, features: Sequence[str] | None, machine: str | None = None) -> str | None:
    """A one-line English note when ``variant``'s fast CPU kernels need a feature this CPU lacks; None otherwise.

    Only for CPU cells, and only when the features are known. The report translates the note by its ``kind``
    (see :func:`variant_note_kind`); this text is the English form and the JSON form.
    """
    kind = variant_note_kind(variant, provider, features)
    if kind is None:
        return None
    return NOTES_EN[kind].format(variant=variant, machine=machine or platform.machine())


NOTES_EN = {
    "int8": "{variant}: int8 MatMul without VNNI (or an ARM dot product) here: expect little speed-up over fp32",
    "q4": "{variant}: 4-bit MatMul without an int8 dot product here: the fast accuracy_level=4 path is not "
    "available, weights are dequantised to fp32",
    "fp16": "{variant}: fp16 on a CPU without native fp16 arithmetic: ORT computes most ops in fp32 with casts "
    "around them; expect no speed-up",
    "q4f16": "{variant}: fp16 activations on a CPU without native fp16 arithmetic: casts around every 4-bit MatMul",
    "bf16": "{variant}: bf16 without AVX512_BF16/AMX here: expect no speed-up",
}


def variant_note_kind(variant: str, provider: str, features: Sequence[str] | None) -> str | None:
    """Which NOTES_EN entry applies to (variant, provider) on a CPU with ``features``; None: no note."""
    if provider != "cpu" or features is None:
        return None
    kind = _kind(variant)
    lacks = {
        "int8": not has_int8_dot(features),
        "q4": not has_int8_dot(features),
        "fp16": not has_fp16_math(features),
        "q4f16": not has_fp16_math(features),
        "bf16": not has_bf16_math(features),
    }
    return kind if kind is not None and lacks[kind] else None
