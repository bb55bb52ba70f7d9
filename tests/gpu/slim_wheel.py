"""Shrink the onnxruntime-gpu wheel for one GPU generation, so it fits a carry-limited GPU box.

    python tests/gpu/slim_wheel.py onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl \
        --sm 90 --out .whl --part-mb 36

Why: the 1.31.1 wheel is 256 MB, and a device call here carries at most 64 MiB with the working tree. 218 MB
of ``libonnxruntime_providers_cuda.so`` is its ``.nv_fatbin`` section: the same kernels compiled for sm_75,
80, 86, 89, 90 and 120 (no PTX). A GPU loads only the code for its own architecture, so the code for the
others is zeroed in place (headers kept: the file's layout and every offset stay the same) and then
compresses to nothing. The unpacked wheel, so pruned, is written as one ``tar.xz`` (69 MB for sm_90 instead
of 256 MB) split into parts. Used on an H200 (sm_90) on 2026-12-04: CUDA cells ran, results in
docs/measurements/gpu-check-h200.json. The result runs only on that architecture: for a real deployment
install ``bench[cuda]`` from PyPI.

On the GPU box (parts carried in one or more calls into /tmp/p), then the prepared check:

    cat /tmp/p/*.part* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, \
        mode='r|xz').extractall('/tmp/site', filter='fully_trusted')"
    PYTHONPATH=/tmp/site python3 tests/gpu/check.py --out reports/gpu-check
"""

from __future__ import annotations

import argparse
import io
import lzma
import struct
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_ELF = 2  # an entry of compiled code (SASS) for one architecture; 1 is PTX, which is kept


def fatbin_section(elf: bytes | bytearray) -> tuple[int, int]:
    """Offset and size of the ``.nv_fatbin`` section of a 64-bit little-endian ELF file."""
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(i: int) -> tuple[int, ...]:
        return struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)

    names = header(shstrndx)[4]
    for i in range(shnum):
        h = header(i)
        start = names + h[0]
        if elf[start : elf.index(0, start)] == b".nv_fatbin":
            return h[4], h[5]
    raise ValueError("no .nv_fatbin section: not a CUDA library")


def prune_fatbin(elf: bytearray, keep_sm: int) -> Counter[str]:
    """Zero, in place, the payload of every SASS entry not for ``keep_sm``; bytes per architecture, kept or not.

    The walk checks itself: each fatbin's entries must end exactly where its header says it ends.
    """
    offset, size = fatbin_section(elf)
    end, p = offset + size, offset
    seen: Counter[str] = Counter()
    while p < end:
        if struct.unpack_from("<I", elf, p)[0] != FATBIN_MAGIC:
            p += 8  # alignment between fatbins
            continue
        _, _, header_size, fat_size = struct.unpack_from("<IHHQ", elf, p)
        q, stop = p + header_size, p + header_size + fat_size
        if stop > end:
            raise ValueError(f"fatbin at {p:#x} runs past its section: the layout is not understood")
        while q < stop:
            kind, _, entry_header, padded = struct.unpack_from("<HHII", elf, q)
            sm = struct.unpack_from("<I", elf, q + 28)[0]
            payload = q + entry_header
            if entry_header < 32 or payload + padded > stop:
                raise ValueError(f"fatbin entry at {q:#x} runs past its fatbin: the layout is not understood")
            if kind == KIND_ELF and sm != keep_sm:
                elf[payload : payload + padded] = bytes(padded)
                seen[f"sm_{sm} zeroed"] += padded
            else:
                seen[f"sm_{sm} kept" if kind == KIND_ELF else "ptx kept"] += padded
            q = payload + padded
        if q != stop:
            raise ValueError(f"fatbin at {p:#x} does not end where its header says: the layout is not understood")
        p = stop
    return seen


def slim(wheel: Path, keep_sm: int) -> tuple[bytes, Counter[str]]:
    """The wheel's files as a tar.xz, CUDA provider pruned to one architecture."""
    buffer = io.BytesIO()
    seen: Counter[str] = Counter()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in zf.infolist():
            data = bytearray(zf.read(info))
            if info.filename.endswith("libonnxruntime_providers_cuda.so"):
                seen = prune_fatbin(data, keep_sm)
            entry = tarfile.TarInfo(info.filename)
            entry.size, entry.mode = len(data), (info.external_attr >> 16) & 0o777 or 0o644
            tar.addfile(entry, io.BytesIO(bytes(data)))
    if not seen:
        raise ValueError(f"{wheel.name} has no libonnxruntime_providers_cuda.so: not an onnxruntime-gpu wheel")
    return lzma.compress(buffer.getvalue(), preset=9), seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--sm", type=int, default=90, help="the GPU's compute capability ×10 (H100/H200: 90)")
    ap.add_argument("--out", type=Path, default=Path(".whl"))
    ap.add_argument("--part-mb", type=float, default=36.0, help="size of each part (a call carries 64 MiB)")
    args = ap.parse_args(argv)
    packed, seen = slim(args.wheel, args.sm)
    for what, n in sorted(seen.items()):
        print(f"{what}: {n / 1e6:.1f} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    step = int(args.part_mb * 1e6)
    name = args.wheel.name.replace(".whl", f"-sm{args.sm}.tar.xz")
    for i in range(0, len(packed), step):
        (args.out / f"{name}.part{i // step:02d}").write_bytes(packed[i : i + step])
    print(f"{name}: {len(packed) / 1e6:.1f} MB in {-(-len(packed) // step)} parts under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
