"""How a cell is measured: the loop, the session and the run's options, each field declared once as a setting.

A light module on purpose (no numpy, no onnxruntime): ``bench run --help`` builds its options from these
dataclasses (bench.settings) without loading what measures. The behaviour lives in bench.timing,
bench.engine and bench.runner, which re-export these names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import InputError
from bench.noise import intra_op_threads
from bench.providers import ProviderOptions, is_gpu
from bench.settings import MAX_THREADS, check, recorded, setting

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_REPLICATES = 5  # fresh sessions per cell: chosen from A/A runs on a 2-core box (README, "Verdicts")
# Warm-up calls of a replicate after the first: the first replicate's --warmup has warmed the process (thread
# pool, allocator, caches); a fresh session then needs its first call (arena, plan), measured at 1.0–1.7× the
# steady median on the demo and a ViT-base export, the second within the steady spread.
REPLICATE_WARMUP = 2
# bench ab's design: what each block gets fresh, how many blocks when not told (at least 10 replicates per side;
# beyond 40 the gain is small), and how long each side is timed at least (100 calls of a µs model are 1 ms).
ISOLATIONS = ("session", "process")
MIN_BLOCKS, MAX_BLOCKS = 10, 40
DEFAULT_MIN_TIME_S = 1.0


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]``; anything but positive integers is a usage error."""
    sizes: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise InputError(f"--batch-sizes takes positive integers separated by commas, got {part!r}")
        sizes.append(int(part))
    if not sizes:
        raise InputError("--batch-sizes is empty; e.g. --batch-sizes 1,8")
    return sorted(dict.fromkeys(sizes))


@dataclass(frozen=True)
class LoopSpec:
    """How long to measure: ``warmup`` uncounted calls, then ``iterations`` timed calls.

    With ``min_time_s`` the loop keeps going until that many seconds have passed *and* at least
    ``iterations`` calls were timed (pytest-benchmark's min_rounds + min_time rule).
    """

    iterations: int = setting(100, flag="--iterations", help="Timed calls per cell.", role="measure", minimum=1)
    warmup: int = setting(
        10,
        flag="--warmup",
        help="Untimed calls before timing (the first replicate; each later replicate, a fresh session in a "
        "warmed process, gets 2).",
        role="measure",
        minimum=0,
    )
    min_time_s: float | None = setting(
        None,
        flag="--min-time",
        help="Keep timing until this many seconds passed (and at least --iterations calls).",
        role="measure",
        minimum=0,
        above=True,
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class SessionSpec:
    """Session controls recorded in every result's config."""

    threads: int | None = setting(
        None,
        flag="--threads",
        help="Intra-op threads (default: ORT's, all cores).",
        role="watch",
        minimum=0,
        maximum=MAX_THREADS,
    )
    inter_op_threads: int | None = setting(
        None, flag="--inter-op-threads", help="Inter-op threads.", role="watch", minimum=0, maximum=MAX_THREADS
    )
    graph_opt: str = setting(
        "all", flag="--graph-opt", help="ORT graph optimisation level.", role="watch", choices=GRAPH_OPT_LEVELS
    )
    provider_options: ProviderOptions = field(default_factory=ProviderOptions)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class RunOptions:
    """Everything that decides how a cell is measured; recorded as the result's ``config``."""

    batch_size: int = setting(1, flag="--batch-size", help="Images per call.", role="measure", minimum=1)
    loop: LoopSpec = field(default_factory=LoopSpec)
    session: SessionSpec = field(default_factory=SessionSpec)
    io_binding: bool | None = setting(
        None,
        flag="--io-binding",
        negative="--no-io-binding",
        help="IOBinding with device-resident input (default: on for GPU providers, off for cpu).",
        role="watch",
        show_default=False,
    )
    sample_hz: float = setting(
        10.0,
        flag="--sample-hz",
        help="Memory/utilisation sampling rate; 0 turns sampling off.",
        role="watch",
        minimum=0,
        maximum=1000,
    )
    seed: int = setting(0, flag="--seed", help="Seed of the random input tensor.", role="measure", minimum=0)
    replicates: int = setting(
        DEFAULT_REPLICATES,
        flag="--replicates",
        help="Fresh sessions (one alive at a time) the timed calls are split over; the statistics resample them. "
        "(bench ab: its --blocks are the replicates.)",
        role="measure",
        minimum=1,
    )
    rounds: int | None = setting(
        None,
        flag="--rounds",
        help="bench matrix: measure the replicates in this many rounds over the whole matrix, each round a fresh "
        "process per cell, so a slow spell of a shared machine touches one round of many cells rather than every "
        "replicate of one. Default: one round per replicate.",
        role="measure",
        minimum=1,
        default_text="--replicates",
    )
    target_precision: float | None = setting(
        None,
        flag="--target-precision",
        help="bench run/matrix: add replicates (fresh sessions) until the p50's 95% interval is within ± this "
        "(2% or 0.02) of it, or --max-time is spent: stable models stop early, noisy ones get more.",
        role="measure",
        minimum=0,
        maximum=1,
        above=True,
        percent=True,
    )
    max_time_s: float | None = setting(
        None,
        flag="--max-time",
        help="Seconds of measuring at most: bench ab's sequential design answers inconclusive (with its MDE) when "
        "they are spent; --target-precision stops adding replicates (default 60 s per cell).",
        role="measure",
        minimum=0,
        above=True,
    )

    def __post_init__(self) -> None:
        check(self)
        if self.session.provider_options.cuda_graph and self.io_binding is False:
            raise InputError("--cuda-graph needs IOBinding (fixed device addresses); drop --no-io-binding")

    def replicate_loops(self) -> list[LoopSpec]:
        """Each replicate's loop: ``iterations`` (and ``min_time_s``) shared out exactly; ``--warmup`` calls
        before the first, ``REPLICATE_WARMUP`` (at most ``--warmup``) before each later one.

        Fewer iterations than replicates: one call per replicate, as many replicates as iterations.
        """
        loop = self.loop
        count = min(self.replicates, loop.iterations)
        per, extra = divmod(loop.iterations, count)
        min_time = loop.min_time_s / count if loop.min_time_s else None
        return [
            LoopSpec(
                iterations=per + (r < extra),
                warmup=loop.warmup if r == 0 else min(loop.warmup, REPLICATE_WARMUP),
                min_time_s=min_time,
            )
            for r in range(count)
        ]

    def round_shares(self) -> list[int]:
        """The replicates each matrix round measures (``--rounds``; default one per replicate), first rounds
        taking the extra: 5 replicates in 3 rounds → [2, 2, 1]."""
        rounds = min(self.rounds or self.replicates, self.replicates)
        per, extra = divmod(self.replicates, rounds)
        return [per + (r < extra) for r in range(rounds)]

    def first_round(self) -> RunOptions:
        """These options cut down to the first round's replicates, each replicate keeping its share of the calls
        (and of ``--min-time``)."""
        share = self.round_shares()[0]
        if share == self.replicates:
            return self
        per = max(1, self.loop.iterations // self.replicates)
        min_time = self.loop.min_time_s * share / self.replicates if self.loop.min_time_s else None
        return replace(self, replicates=share, loop=replace(self.loop, iterations=per * share, min_time_s=min_time))

    def cpu_threads(self, provider: str) -> int | None:
        """The CPU threads a session on ``provider`` computes with, for the contention check (bench.noise);
        None on a GPU provider, where the CPU only launches work."""
        return None if is_gpu(provider) else intra_op_threads(self.session.threads)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for a child process (``bench._cell``); :meth:`from_dict` rebuilds it."""
        data = asdict(self)
        cache = data["session"]["provider_options"].get("trt_cache_dir")
        data["session"]["provider_options"]["trt_cache_dir"] = str(cache) if cache is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        session = dict(data["session"])
        po = dict(session.pop("provider_options"))
        if po.get("trt_cache_dir") is not None:
            po["trt_cache_dir"] = Path(po["trt_cache_dir"])
        return cls(
            batch_size=data["batch_size"],
            loop=LoopSpec(**data["loop"]),
            session=SessionSpec(**session, provider_options=ProviderOptions(**po)),
            io_binding=data["io_binding"],
            sample_hz=data["sample_hz"],
            seed=data["seed"],
            replicates=data.get("replicates", 1),
            rounds=data.get("rounds"),
            target_precision=data.get("target_precision"),
            max_time_s=data.get("max_time_s"),
        )

    def as_config(self) -> dict[str, Any]:
        """The result's ``config``: every declared setting (bench.settings.recorded) and what follows from them."""
        config = recorded(self)
        config["replicate_warmup"] = min(self.loop.warmup, REPLICATE_WARMUP)
        config["gc_disabled_during_timing"] = True
        return config


__all__ = [
    "DEFAULT_MIN_TIME_S",
    "DEFAULT_REPLICATES",
    "GRAPH_OPT_LEVELS",
    "ISOLATIONS",
    "MAX_BLOCKS",
    "MIN_BLOCKS",
    "REPLICATE_WARMUP",
    "LoopSpec",
    "RunOptions",
    "SessionSpec",
]
