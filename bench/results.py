"""The results contract (ARCHITECTURE.md): typed dataclasses with a stable, versioned JSON form, and CSV.

Field names are an interface users' CI scripts read: add fields, never rename; bump ``SCHEMA_VERSION``
on a break. Fields a run could not measure are None with a reason beside them. The top-level records
are stdlib dataclasses (code builds and mutates them); their nested JSON objects are TypedDicts, so
one set of types is both the documentation and, through pydantic (imported only when validating),
the JSON Schema (:func:`results_schema`, published as docs/results.schema.json) and the parser that
:meth:`RunResult.load` uses (:func:`validate_results`: the RunResult it returns is the one validation built).

Reading is lenient where it can be and strict where it must be: unknown keys are allowed everywhere
(a newer bench may add fields), keys of nested objects are optional (older files lack keys added
since; bench itself always writes them all), but a key that is present must have its type (no
coercion: ``"8"`` is not a batch size). :func:`load_frame` turns many results files into one pandas table.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import Required, TypedDict, is_typeddict

from bench.errors import InputError
from bench.outdir import NO_SPACE, no_space_error
from bench.validity import check_values, parse_results_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import pandas as pd
    from pydantic import TypeAdapter, ValidationError

SCHEMA_VERSION = 1
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Status = Literal["ok", "unavailable", "failed"]


# --- nested objects of results.json ---------------------------------------------------------------
# typing_extensions.TypedDict, not typing's: pydantic needs it on Python < 3.12.


class _AsWritten:
    """``Annotated`` marker for a record stored in results.json as the dict its ``to_dict()`` writes (a service
    entry's ``load``): validated and documented as that dataclass, read back as the dict ``to_dict()`` makes of
    it (so readers index it like any nested object; keys an older file lacks get the record's defaults)."""

    def __init__(self, record: type) -> None:
        self.record = record

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            lambda record: record.to_dict(), handler.generate_schema(self.record)
        )


class PlatformInfo(TypedDict, total=False):
    """``platform.system()``, ``release()`` and ``machine()``."""

    system: str
    release: str
    machine: str


class CpuInfo(TypedDict, total=False):
    """CPU model and core counts (None where psutil cannot tell)."""

    model: str
    cores_physical: int | None
    cores_logical: int | None
    affinity: int | None
    features: list[str] | None  # bench.cpufeatures.FEATURES this CPU has (AVX2, VNNI, …); None: unknown


class GpuInfo(TypedDict, total=False):
    """The GPU as NVML describes it."""

    index: int
    name: str
    driver: str
    cuda: str
    memory_total_mb: float


class Environment(TypedDict, total=False):
    """Where a run was measured (bench.environment.fingerprint); open-ended: other keys may appear."""

    onnxruntime: str
    onnxruntime_build: Literal["gpu", "cpu"]  # which ORT distribution is installed
    onnxruntime_providers_compiled: list[str]
    onnx: str | None
    numpy: str
    python: str
    bench: str | None
    platform: PlatformInfo
    cpu: CpuInfo
    memory_total_mb: int
    gpu: GpuInfo | None
    gpu_reason: str | None
    cuda_libraries: dict[str, str | None]
    tensorrt: str | None  # TensorRT's version where its libraries are installed (bench.environment.tensorrt_version)
    machine_id: str  # short hash of what makes two runs comparable


class ServiceOptions(TypedDict, total=False):
    """``bench matrix --with-service``: the load it put on each served variant."""

    rate: float  # --service-rate: /detect requests per second, open loop
    duration_s: float  # --service-duration: seconds of /detect and of /detect/batch load
    slo_p99_ms: float  # --service-slo: the p99 SLO find-max holds each served variant to
    budget_s: float | None  # --service-budget: seconds the whole service phase may take; None: unbounded
    server_cpus: str | None  # --service-cpus: the CPUs each served model was pinned to; None: not pinned
    load_cpus: str | None  # --load-cpus: the CPUs the load generator was pinned to; None: not pinned


class ClaimsRecord(TypedDict, total=False):
    """The claims a matrix answered, kept so ``bench report`` answers the same ones later (report.claims)."""

    source: str | None  # the --claims file; None: the built-in seed claims
    claim: list[dict[str, Any]]  # its [[claim]] tables as read (id, text, check, limit, variants, ...)


class RunConfig(TypedDict, total=False):
    """Every flag as resolved; which keys appear depends on ``command`` (run, eval, matrix, ab)."""

    command: str
    model_dir: str
    variants: list[str]
    providers: list[str]
    batch_size: int
    batch_sizes: list[int]
    iterations: int
    warmup: int
    replicate_warmup: int  # warm-up calls before each replicate after the first (which gets ``warmup``)
    threads_why: str  # run, matrix, ab: why it measured with fewer threads than ORT's default (a busy machine)
    min_time_s: float | None
    threads: int | None
    inter_op_threads: int | None
    graph_opt: str
    device_id: int
    trt_fp16: bool
    trt_int8: bool
    cuda_graph: bool
    trt_cache: str | None
    io_binding: bool | None
    sample_hz: float
    seed: int
    replicates: int  # fresh sessions (or processes) the timed calls were split over; bench ab: its blocks
    rounds: int | None  # matrix: rounds over the whole matrix the replicates were measured in (None: one per replicate)
    gc_disabled_during_timing: bool  # Python's garbage collector was off during timed calls
    # matrix
    cell_timeout_s: float
    with_service: bool
    service_options: ServiceOptions  # with_service: how the service was loaded
    claims: ClaimsRecord  # the claims the report answered
    threshold: float | None
    positive_label: str | None
    accuracy_reason: str | None
    perturbations: list[str]  # eval/matrix --perturb: the perturbation names evaluated ("clean" first); [] none
    perturb_seed: int
    threshold_at_fpr: float | None  # eval: the threshold transfer's target FPR (None: off)
    flip_batch_sizes: list[int]  # eval: batch sizes the decisions were compared with the reference's at
    reference_variant: str
    policy_file: str | None
    policy: dict[str, Any] | None  # the release policy as bench.report.policy.Policy.to_dict() writes it
    resumed: bool
    executor: str  # matrix: local | ray (not a measuring setting: --resume may switch it)
    ray: dict[str, Any] | None  # matrix --executor ray: address, resources, scheduling timeout
    # eval
    dataset: str
    dataset_kind: str
    reference: str | None
    strict: bool
    # ab
    provider: str
    blocks: int
    iterations_per_block: int
    order: str
    isolation: Literal["session", "process"]  # what each block got fresh
    memory: str
    side: str
    design: Literal["fixed", "sequential"]  # ab: a fixed number of blocks, or pairs until the verdict is settled
    looks: list[SequentialLook]  # ab --sequential: every look at the data, one per pair of blocks
    stopped_because: Literal["regression", "improvement", "same", "budget", "max_pairs", "failed"]  # ab --sequential
    max_pairs: int  # ab --sequential: pairs of blocks it would add at most
    target_precision: float | None  # run/matrix: replicates added until the p50 interval's half-width is within this
    max_time_s: float | None  # ab --sequential and --target-precision: seconds of measuring at most
    ab_cells: list[AbCellDesign]  # ab over several cells (--variant LIST, --batch-sizes): each cell's own design


class AbCellDesign(TypedDict, total=False):
    """How ``bench ab`` measured one cell of several: its blocks, their order and its threads (each cell's own)."""

    variant: str
    batch_size: int
    blocks: int
    iterations_per_block: int
    order: str
    threads: int | None
    threads_why: str


class DatasetInfo(TypedDict, total=False):
    """The evaluation set; ``fingerprint`` is the sha256 of its sorted (relpath, size, label[, group]) rows."""

    path: str
    n: int
    fingerprint: str
    audit: DatasetAudit  # bench eval/matrix: can the files' metadata alone tell the classes apart (bench.audit)


class AuditFeature(TypedDict):
    """A metadata feature that separates the classes on its own (bench.audit)."""

    feature: str
    auc: float  # the feature's own ROC AUC for fake
    real: Any  # the real images' most common value (categories) or median
    fake: Any


class DatasetAudit(TypedDict, total=False):
    """Shortcut audit (bench.audit): a metadata-only classifier's cross-validated ROC AUC and its 95 % interval."""

    n: int
    n_fake: int
    features: list[str]
    classifier: str
    shortcut_auc: float  # the line: verdict "shortcut" when the whole interval lies above it
    metadata_auc: float | None
    metadata_auc_ci: list[float] | None
    ci_unit: Literal["image", "group"]
    verdict: Literal["shortcut", "no shortcut", "inconclusive"]
    separating: list[AuditFeature]
    warnings: list[str]
    skipped: list[SkippedImage]
    reasons: dict[str, str]


class CellLatency(TypedDict, total=False):
    """Per-call (one batch) latency in ms from the raw samples (bench.timing.LatencyStats)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float


class RankedCell(TypedDict, total=False):
    """A cell named by the recommendation, with its ranking figure and 95 % interval; a contender also with its
    ratio to the best cell (> 1: worse) and the verdict on the margin."""

    variant: str
    provider: str
    batch_size: int
    value: float | None
    interval: list[float] | None
    verdict: Literal["tied", "slower", "undecided"]  # ratio interval inside the margin / wholly beyond / neither
    ratio: float | None
    ratio_interval: list[float] | None
    replicates_needed: int | None  # undecided: replicates per cell that would settle it (80 % power), if known
    could_change_choice: bool  # undecided: settling it could change the choice
    too_small: str  # undecided for want of calls or replicates: why there is no interval
    noisy: str  # why this deciding figure was measured on a busy machine (recommendation.noisy)
    inconclusive_checks: list[str]  # held back: the policy checks it leaves undecided (it fails none)


class DecideCell(TypedDict, total=False):
    """Replicates `bench matrix --decide` added to one cell (each in a process of its own)."""

    variant: str
    provider: str
    batch_size: int
    replicates: int


class DecideLook(TypedDict, total=False):
    """One round of `bench matrix --decide`: what it measured and how long it took."""

    seconds: float
    cells: list[DecideCell]


class DecideRecord(TypedDict, total=False):
    """What `bench matrix --decide` did to settle an undecided recommendation."""

    budget_s: float
    rounds: int  # rounds of further replicates (each one followed by a look at the data)
    seconds: float
    added: list[DecideCell]  # replicates added per cell, all rounds together
    looks: list[DecideLook]
    stopped: Literal["decided", "budget", "max_rounds", "interrupted", "cannot_add", "not_needed", "cannot_settle"]


class RecommendationInfo(TypedDict, total=False):
    """The release recommendation: the choice, whether the data decides it (``status``), the margin, cells tied
    with the best within it (equivalence of their ratio interval) and the tie rule, the contenders that cannot
    be told apart from the best and what would settle them, and --decide's further looks."""

    choice: RankedCell | None
    rank_by: str
    tied: list[RankedCell]
    rule: str | None
    passing: int
    candidates: int
    status: Literal["decided", "undecided"]
    margin: float  # the policy's rank_margin (0.05: ratios within ×0.952…×1.05 are equivalent)
    confidence: float  # of the ratio intervals
    best: RankedCell | None  # the best passing cell on rank_by (the choice unless the tie rule chose another)
    contenders: list[RankedCell]  # every other passing cell against the best: ratio, interval, verdict
    undecided: list[RankedCell]  # contenders that cannot be told apart from the best and could change the choice
    replicates_needed: int | None  # per cell, to settle every undecided contender (None: unknown or decided)
    on_pareto_front: bool  # the choice on the front of the policy's objectives (rank_by, model size, accuracy)
    dominated_by: list[RankedCell]
    decide: DecideRecord
    noisy: list[RankedCell]  # deciding figures measured on a noisy or contended cell (each with its why): undecided
    held_back: list[RankedCell]  # candidates faster than the choice held back only by inconclusive checks


class Replicates(TypedDict, total=False):
    """How a cell's timed calls were split into replicates (fresh sessions, one alive at a time)."""

    count: int
    isolation: Literal["session", "process"]
    iterations_per_replicate: int
    session_create_ms: list[float]  # per replicate; the first is the cold start
    p50_ms: list[float]  # median of each replicate's calls
    cv_between: float | None  # CV of the replicate medians
    cv_within: float | None  # median robust CV (IQR/1.349/median) of calls within a replicate
    gc_disabled: bool  # Python's garbage collector was off during timed calls
    processes: int  # processes the replicates were made in, when more than one (bench matrix --decide added some)
    looks: list[PrecisionLook]  # --target-precision: the p50 interval after each replicate from the third on
    stopped_because: Literal["precise", "budget", "max_replicates"]  # --target-precision: why no more were added


class PrecisionLook(TypedDict, total=False):
    """One look of ``--target-precision``: the p50 interval's relative half-width after ``replicates``."""

    replicates: int
    seconds: float
    p50_ms: float
    half_width: float  # (high - low) / 2 / p50: a fraction (0.02 = ±2 %)


class LookInterval(TypedDict, total=False):
    """A latency ratio's confidence sequence at one look (current / baseline), and the verdict it reads."""

    ratio: float | None
    low: float | None  # None while the sequence is unbounded (too few pairs)
    high: float | None
    verdict: Literal["regression", "improvement", "same", "inconclusive"]


class SequentialLook(TypedDict, total=False):
    """One look of ``bench ab --sequential``: after a pair of blocks (one AB, one BA), each latency row's sequence."""

    pair: int
    seconds: float  # measuring time since the first block
    order: str  # "ABBA" or "BAAB"
    p50: LookInterval
    p95: LookInterval | None  # None: blocks too short for a p95 of their own


class SequentialRecord(TypedDict, total=False):
    """How ``bench ab --sequential`` decided: the method, its error rate, every look and why it stopped."""

    method: str
    alpha: float  # for the latency rows together; each row's sequence at alpha / 2
    prior_g: float
    pairs: int
    max_pairs: int
    max_time_s: float | None
    seconds: float
    stopped_because: Literal["regression", "improvement", "same", "budget", "max_pairs", "failed"]
    looks: list[SequentialLook]


class Noise(TypedDict, total=False):
    """The machine's load while a cell was timed (bench.noise); ``noisy`` flags a cell to distrust."""

    wall_s: float
    loadavg_1m: list[float]  # [start, end]
    cpu_count: int
    others_cpu_cores: float  # CPU time used by other processes during the timed phase, in cores
    steal_pct: float | None  # hypervisor steal, % of all CPUs' time (None where the kernel reports none)
    cpu_freq_mhz: list[float] | None  # [start, end] mean current frequency, where readable
    noisy: bool
    why: str | None
    threads: int  # CPU threads the measured session computed with (CPU providers only)
    contended: bool  # those threads plus the others' load exceeded the CPUs: differences are diluted


class Spread(TypedDict, total=False):
    """Mean, min and max of a sampled reading."""

    mean: float | None
    min: float | None
    max: float | None


class GpuTelemetry(TypedDict, total=False):
    """NVML readings over the timed phase (bench.sampling.summarise_telemetry); None where the GPU lacks one."""

    over: Literal["timed", "cell"]
    readings: int
    sm_clock_mhz: Spread | None
    mem_clock_mhz: Spread | None
    power_w: Spread | None
    temperature_c: Spread | None
    throttle_reasons: list[str] | None  # every NVML clocks-event reason seen (gpu_idle, sw_power_cap, ...)
    energy_j: float | None  # NVML total-energy counter, end minus start of the timed phase
    energy_per_image_j: float | None
    timed_s: float | None
    energy_reason: str | None
    clocks_changed: bool  # SM or memory clock moved > 2 % during the timed phase
    noise: list[str]  # why the figures may be noisy (clocks changed, throttling)


class EngineBuild(TypedDict, total=False):
    """A TensorRT cell's engine: cache key and state, build (cold) or load (warm) time, precision flags."""

    tensorrt: str | None
    fp16: bool
    int8: bool
    cache: Literal["cold", "warm", "off"]
    cache_key: str | None  # sha256 of key_inputs, first 16 hex digits
    cache_dir: str | None
    key_inputs: dict[str, Any] | None  # model_sha256, tensorrt, gpu, onnxruntime, fp16, int8, cuda_graph
    engine_files: list[str]
    build_ms: float | None  # session creation with a cold cache: the engine build
    load_ms: float | None  # session creation with a warm cache: the engine load


class StageTime(TypedDict, total=False):
    """One stage of a staged call, in ms."""

    n: int
    p50: float
    mean: float


class CopyBreakdown(TypedDict, total=False):
    """Where an end-to-end GPU call (no IOBinding) spends its time (bench.engine.Engine.copy_breakdown)."""

    copy_in: StageTime  # host → device copy of the input
    compute: StageTime  # the model, outputs left on the device
    copy_out: StageTime  # device → host copy of the outputs
    total_p50: float
    copy_share: float | None  # (copy in + copy out) / total, of the medians
    input_bytes: int | None


class GpuRun(TypedDict, total=False):
    """What a GPU cell ran with (bench.engine.Engine.gpu_run), plus its copy breakdown when measured."""

    cuda_graph: bool
    engine_build: EngineBuild | None
    copy_breakdown_ms: CopyBreakdown | None
    backend: str  # "pytorch" for a PyTorch cell (absent for ONNX Runtime)
    clock_sync: str  # PyTorch on CUDA: what is called before the clock is read


class CellMemory(TypedDict, total=False):
    """Peaks over the whole cell, means over the timed phase (bench.sampling.MemoryStats); GPU figures None
    with ``gpu_reason``. Files from before the GPU telemetry lack the keys after ``samples``."""

    rss_peak_mb: float | None
    rss_mean_mb: float | None
    cpu_mean_pct: float | None
    system_ram_peak_pct: float | None
    gpu_process_peak_mb: float | None  # None when NVML does not attribute memory to this process
    gpu_device_peak_mb: float | None  # device-wide: every process on the GPU
    gpu_total_mb: float | None
    gpu_util_mean_pct: float | None
    gpu_util_max_pct: float | None
    gpu_reason: str | None
    samples: int
    gpu_process_reason: str | None
    gpu_device_scope: str | None
    means_over: Literal["timed", "cell"] | None
    peaks_over: Literal["cell"] | None
    timed_samples: int | None
    gpu_telemetry: GpuTelemetry | None
    gpu_run: GpuRun | None


class SkippedImage(TypedDict):
    """An image left out of the evaluation, and why."""

    path: str
    reason: str


class Prediction(TypedDict, total=False):
    """One evaluated image: p(fake), its true label and the decision, as class names (label None: unlabelled), and
    its group when the data set names groups (what the intervals resample)."""

    path: Required[str]
    p_fake: Required[float]
    label: str | None
    pred: str | None
    group: str


class Agreement(TypedDict, total=False):
    """How far a variant's predictions stray from the reference variant's (bench.metrics.agreement)."""

    reference: str
    reference_provider: str
    n: int
    flip_rate: float
    max_abs_dp: float
    mean_abs_dp: float
    kl: float
    # Paired on the same images (bench.metrics.paired_differences); None for the reference itself, and with
    # reasons[key] on an unlabelled set. Intervals are 95 %, over images or the data set's groups (the cell's ci_unit).
    accuracy_drop_pt: float | None  # reference accuracy − this variant's, percentage points
    accuracy_drop_pt_ci: list[float] | None  # Tango's score interval, points
    discordant: list[int] | None  # images [the reference right and this variant wrong, the reverse]
    roc_auc_delta: float | None  # this variant's ROC AUC − the reference's
    roc_auc_delta_ci: list[float] | None  # paired percentile bootstrap


class VersusClean(TypedDict, total=False):
    """A perturbed pass against the same variant's clean pass (bench.metrics.versus_clean); fractions, not points."""

    delta_roc_auc: float | None  # perturbed − clean
    delta_accuracy: float | None  # perturbed − clean
    flip_rate: float  # share of images whose decision changed
    max_abs_dp: float
    mean_abs_dp: float
    reasons: dict[str, str]


class Scores(TypedDict, total=False):
    """The figures of a labelled evaluation, clean or perturbed; None with ``reasons[field]`` when undefined."""

    n: int
    threshold: float
    accuracy: float | None
    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    average_precision: float | None
    eer: float | None
    eer_threshold: float | None
    log_loss: float | None
    ece: float | None
    # 95 % intervals [low, high] (bench.metrics): Wilson for the shares, MOVER of per-class Wilson for balanced
    # accuracy, BCa bootstrap for the rest; None with reasons["<metric>_ci"] (or the figure's own) when undefined.
    accuracy_ci: list[float] | None
    balanced_accuracy_ci: list[float] | None
    precision_ci: list[float] | None
    recall_ci: list[float] | None
    roc_auc_ci: list[float] | None
    average_precision_ci: list[float] | None
    eer_ci: list[float] | None
    ece_ci: list[float] | None
    ci_unit: Literal["image", "group"]  # what the intervals treat as independent
    n_groups: int | None  # groups in the evaluated images (ci_unit "group"), else None
    confusion: list[list[int]] | None  # [[tn, fp], [fn, tp]]
    reasons: dict[str, str]
    # Detector operating points and calibration (bench.metrics.detector_metrics): TPR at FPR 1 % and 0.1 % (None
    # with reasons["tpr_at_fpr.<α>"] when the set has too few real images), the FPR on real images at the decision
    # threshold, the Brier score, the reliability diagram's data.
    tpr_at_fpr: dict[str, OperatingPoint | None] | None
    fpr: float | None
    fpr_ci: list[float] | None
    brier: float | None
    brier_ci: list[float] | None
    reliability: Reliability | None


class OperatingPoint(TypedDict, total=False):
    """TPR at a target FPR α: the ROC curve read at α (``tpr``, ``tpr_ci``), and the deployable threshold."""

    tpr: float
    tpr_ci: list[float] | None
    threshold: float  # the p(fake) cut-off of the point with the largest TPR whose FPR ≤ α
    fpr: float  # reached at that threshold
    tpr_at_threshold: float


class Reliability(TypedDict):
    """Reliability diagram data: p(fake) in ``bins`` equal-width bins; per bin images, mean p(fake), share fake."""

    bins: int
    count: list[int]
    mean_p: list[float | None]
    fake_rate: list[float | None]


class ThresholdTransfer(TypedDict, total=False):
    """The reference variant's threshold for FPR ≤ ``target_fpr`` applied to this variant (bench.evaluate)."""

    reference: str
    reference_provider: str
    target_fpr: float
    threshold: float
    reference_fpr: float
    reference_tpr: float
    fpr: float | None  # this variant's, at the reference's threshold
    fpr_ci: list[float] | None  # Wilson
    tpr: float | None
    tpr_ci: list[float] | None
    n_real: int
    n_fake: int
    false_alarms: int
    detected: int


class GroupSlice(TypedDict):
    """One group's figures (a manifest's ``group``: generator, source) at the decision threshold."""

    group: str
    n: int
    n_fake: int
    accuracy: float
    accuracy_ci: list[float] | None  # Wilson over the group's images
    fpr: float | None
    tpr: float | None


class BatchFlips(TypedDict):
    """Decisions that differ from the reference variant's at the same batch size (dynamic quantisation)."""

    batch_size: int
    reference: str
    n: int
    flips: int
    flip_rate: float
    flip_rate_ci: list[float] | None  # Wilson


class PreprocessingUsed(TypedDict):
    """The preprocessing an evaluation actually used (bench.preprocess.PreprocessConfig.describe)."""

    height: int
    width: int
    resample: str
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: list[float]
    image_std: list[float]


class PerturbedAccuracy(Scores, total=False):
    """One perturbation (bench.perturb name, e.g. ``jpeg:50+resize:0.5``) of one (variant, provider): the
    accuracy figures on the perturbed images, the change against clean, agreement with the reference variant
    under the same perturbation, and the per-image predictions."""

    perturbation: Required[str]
    vs_clean: VersusClean
    agreement: Agreement | None
    wall_s: float
    predictions: list[Prediction]


class Accuracy(Scores, total=False):
    """Accuracy figures of one (variant, provider) on the dataset; None with ``reasons[field]`` when undefined."""

    skipped: list[SkippedImage]
    positive_label: str | None
    agreement: Agreement | None
    images_per_s: float | None
    wall_s: float
    batch_size: int
    predictions: list[Prediction]
    perturbations: list[PerturbedAccuracy]  # bench eval/matrix --perturb: one entry per perturbation, clean excluded
    preprocessing: PreprocessingUsed
    threshold_transfer: ThresholdTransfer | None  # None with reasons["threshold_transfer"]
    group_slices: list[GroupSlice]  # a data set with groups
    batch_p_fake: dict[str, list[float]]  # bench eval --flip-batch-sizes: p(fake) per image at each batch size
    batch_flips: list[BatchFlips]


class OpTypeShare(TypedDict, total=False):
    """One op type's time in a profile (bench.profile.profiler): ms per inference and share of the op time."""

    op_type: str
    calls: int
    ms: float
    share: float
    flops: int | None  # None: an op type with no FLOPs formula (not counted, not guessed)
    gflops: float | None


class CellProfile(TypedDict, total=False):
    """``bench matrix --profile``: where the cell's time goes, profiled in a session of its own after the timed
    cells (never inside them); ``bench profile --json`` holds the full form."""

    total_flops: int  # 2 × MACs per call of the counted ops (bench.profile.flops)
    not_counted: list[str]  # op types without a FLOPs formula
    timed_p50_ms: float  # bare calls in a plain session beside the profile
    profiled_p50_ms: float | None
    achieved_gflops: float | None
    peak_gflops: float | None  # this machine's measured GEMM peak (bench.profile.peak), None: not measured
    fraction_of_peak: float | None
    op_types: list[OpTypeShare]
    nodes: list[dict[str, Any]]  # the slowest nodes: name, op_type, ms, flops
    kernels: list[dict[str, Any]] | None  # CUDA kernels (GPU cells): name, op_name, calls, ms
    tensorrt_layers_note: str | None
    reason: str | None  # why there is no profile (the provider could not run it, …)


class Placement(TypedDict, total=False):
    """Where a cell ran when an executor sent it to another machine (``bench matrix --executor ray``): the node,
    that host's fingerprint and the GPU it was given. Cells the local executor ran have none: the run's
    ``environment`` is theirs."""

    executor: str  # "ray"
    node_id: str  # Ray's node id
    node_ip: str
    machine_id: str  # bench.environment.machine_id of that host: what two cells must share to be compared
    machine_class: str  # the table a report groups the cell under: the GPU's name for GPU cells, else the CPU's
    cpu_model: str
    cores_logical: int | None
    memory_total_mb: int
    gpu: GpuInfo | None  # the GPU the cell was given (GPU cells), as NVML describes it
    gpu_ids: list[str]  # Ray's ids of the GPUs assigned to the cell (one: a whole GPU per timing cell)
    gpu_reason: str | None
    onnxruntime: str


class CellKey(TypedDict):
    """A cell's identity."""

    variant: str
    provider: str
    batch_size: int


class LoadLatency(TypedDict, total=False):
    """Latency of 2xx answers in ms, from exact samples; figures None with ``reason`` when there were none."""

    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None
    mean: float | None
    reason: str


class SendLag(TypedDict, total=False):
    """How late the generator sent requests against their schedule, in ms (open loop only)."""

    p50: float | None
    p99: float | None
    max: float | None
    reason: str


class GeneratorFigures(TypedDict, total=False):
    """One of the N arrival streams of ``bench load --generators N``: its share, its own lag and ceiling."""

    index: int
    where: str  # "process PID" (local) or "ray node IP pid PID" (a Ray actor)
    target_rate: float | None  # open loop: this stream's share of the total rate
    concurrency: int | None  # closed loop: this stream's share of the requests in flight
    requests: int
    ok: int
    errors: int
    send_lag_ms: SendLag
    ceiling_rps: float | None  # closed-loop burst on /health/live, measured alone (the others idle)
    ceiling_reason: str | None
    load_fraction: float | None  # target_rate / ceiling_rps
    over_ceiling: bool  # load_fraction above CEILING_WARN_FRACTION: this stream may be its own bottleneck


class ServerMemory(TypedDict, total=False):
    """The server's memory from /health at the start, middle and end of a load run, and the leak verdict."""

    rss_start_mb: float | None
    rss_mid_mb: float | None
    rss_end_mb: float | None
    gpu_start_mb: float | None
    gpu_mid_mb: float | None
    gpu_end_mb: float | None
    leak_suspected: bool | None
    leak_rule: str
    reason: str | None


class LoadConfig(TypedDict, total=False):
    """How a load run was set up and how much of its schedule it sent."""

    duration_requested_s: float
    max_requests: int
    timeout_s: float
    seed: int
    connections: int
    payloads: int
    scheduled: int | None
    unsent: int
    latency_from: str
    latency_of: str


class MaxRateStep(TypedDict, total=False):
    """One rate tried by --find-max; p50/p99 are the steady-state figures it was judged on (warm-up left out)."""

    rate: float
    achieved_rate: float | None
    duration_s: float  # how long the step's schedule ran: long enough for the answers it needs
    requests: int
    ok: int
    errors: dict[str, int]
    answers_judged: int  # answers after the warm-up: the p50/p99 below are theirs
    p50_ms: float | None
    p99_ms: float | None
    p99_ci_ms: list[float] | None  # 95 % block-bootstrap interval of p99_ms; None: too few answers
    noise: Noise  # what else the machine did during the step (the served model's own CPU time excluded)
    passed: bool
    retest: bool  # the same rate run again because the first run failed
    flaky: bool  # failed, then passed on the retest
    why: str


class MaxRateEdge(TypedDict, total=False):
    """One edge of the find-max bracket: the rate, and the steady-state p99 with its interval measured there."""

    rate: float
    p99_ms: float | None
    p99_ci_ms: list[float] | None
    noise: Noise


class StepRuleRecord(TypedDict, total=False):
    """How find-max stepped (bench.load.findmax.StepRule): the same for ``bench load`` and ``bench matrix``."""

    judged: str  # the quantile a step is judged on: p99
    answers_needed: int  # judged answers a step needs: ≥ 5 beyond the quantile (p99: 500)
    warmup_fraction: float  # the first share of a step's answers (send order) that is not judged
    step_requests: int  # requests per step
    min_step_s: float  # the shortest step
    max_steps: int
    tolerance: float  # the search stops when (lowest fail − highest pass) / highest pass is at most this


class MaxRate(TypedDict, total=False):
    """--find-max: the bracket [highest rate that met the p99 SLO with no errors, lowest that did not], with the
    p99 interval at each edge, and what stopped the search."""

    slo_p99_ms: float
    rate_rps: float | None  # the bracket's lower edge
    bracket: list[float | None]  # [highest pass, lowest fail]
    highest_pass: MaxRateEdge | None
    lowest_fail: MaxRateEdge | None
    probes: int  # steps run, retests included
    limited_by: Literal["slo", "max_steps", "min_rate", "max_rate", "generator", "budget", "service_time"]
    rule: StepRuleRecord
    start_rate: float  # the first rate tried
    start_from: str  # "closed-loop capacity" (half of it) or "--rate"
    noise: Noise  # over every step
    steps: list[MaxRateStep]
    reason: str
    closed_loop_capacity_rps: float  # throughput of a closed loop at closed_loop_concurrency in flight
    closed_loop_concurrency: int
    littles_law_rps: float  # concurrency / mean latency of that closed loop
    warning: str


class BatchEndpoint(TypedDict, total=False):
    """The /detect/batch figures of a service entry."""

    files_per_request: int
    rate: float
    requests: int
    ok: int
    errors: dict[str, int]
    latency_ms: LoadLatency
    ms_per_image_p50: float | None
    images_per_s: float | None


class ServiceHealth(TypedDict, total=False):
    """The service's /health answer once it was ready (its body is the service's own, open-ended)."""

    http_status: int | None  # None: nothing answered
    body: dict[str, Any] | None


class ServiceStartup(TypedDict, total=False):
    """How long ``bench serve`` took to become ready, and the model's load and warm-up inside that."""

    ready_s: float  # process spawn → /health/ready
    load_ms: float | None  # from /health: session creation
    warmup_ms: float | None  # from /health: warm-up calls before ready


class InvalidInput(TypedDict, total=False):
    """One bad upload sent to the service (bench.service.harness.BAD_UPLOADS) and the status it answered."""

    case: str
    endpoint: str  # /detect or /detect/batch
    expected: int  # the HTTP status CLI.md promises
    status: int | None  # the status it answered; None: nothing answered


class MetricsProbe(TypedDict, total=False):
    """GET /metrics once the load is over: its status and whether it spoke the Prometheus text format."""

    http_status: int | None  # None: nothing answered
    prometheus: bool  # a text/plain body with HELP/TYPE lines


class ServiceEntry(TypedDict, total=False):
    """One variant served over HTTP (``bench matrix --with-service``); figures None with ``reason`` if not run."""

    variant: str
    provider: str
    status: Status
    reason: str | None
    load: Annotated[dict[str, Any], _AsWritten(LoadResult)] | None  # the /detect load run, as LoadResult.to_dict()
    inprocess_p50_ms: float | None
    overhead_p50_ms: float | None
    batch_endpoint: BatchEndpoint | None
    max_rate: MaxRate | None
    noise: Noise | None  # the load phase (/detect, /detect/batch, find-max); the served model's CPU time excluded
    health: ServiceHealth | None
    startup: ServiceStartup | None
    invalid_inputs: list[InvalidInput] | None
    metrics: MetricsProbe | None  # GET /metrics after the load: does the Prometheus endpoint answer


# --- the records ----------------------------------------------------------------------------------


@dataclass
class ModelInfo:
    """The model file a cell measured; ``recipe`` is its build record (the variant sidecar), open-ended."""

    file: str
    size_mb: float
    sha256: str
    recipe: dict[str, Any] | None = None


@dataclass
class CellResult:
    """One variant × provider × batch size."""

    variant: str
    provider: str
    batch_size: int
    status: Status = "ok"
    reason: str | None = None
    providers_effective: list[str] = field(default_factory=list)
    io_binding: bool | None = None
    model: ModelInfo | None = None
    session_create_ms: float | None = None
    latency_ms: CellLatency | None = None
    samples_ms: list[float] = field(default_factory=list)
    throughput_ips: float | None = None
    memory: CellMemory | None = None
    accuracy: Accuracy | None = None
    # Second wave (omitted from the JSON while empty, so older files round-trip unchanged):
    sample_replicates: list[int] = field(default_factory=list)  # replicate index of each samples_ms entry
    replicates: Replicates | None = None  # how the replicates were made, and their noise
    noise: Noise | None = None  # what else the machine was doing while this cell was timed
    placement: Placement | None = None  # the node, host and GPU it ran on, when not this run's machine (Ray)
    profile: CellProfile | None = None  # bench matrix --profile: op-type shares, GFLOP/s, fraction of peak

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.provider, self.batch_size)

    def latency_interval(self, statistic: str = "p50") -> tuple[float, float, float] | None:
        """(point, low, high) in ms of a per-call latency quantile, by bench.stats' two-level bootstrap over this
        cell's replicates (contiguous blocks for files without replicate indices); None when too few to tell."""
        if not self.samples_ms:
            return None
        from bench.stats import quantile_interval, replicate_groups  # numpy: off the path of `bench run --help`

        groups, _unit = replicate_groups(self.samples_ms, self.sample_replicates or None)
        return quantile_interval(groups, statistic)

    @classmethod
    def not_run(cls, variant: str, provider: str, batch_size: int, status: Status, reason: str) -> CellResult:
        """A cell that could not run is a result, not a crash."""
        return cls(variant=variant, provider=provider, batch_size=batch_size, status=status, reason=reason)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if isinstance(data.get("model"), dict):
            model_fields = {f.name for f in fields(ModelInfo)}
            data["model"] = ModelInfo(**{k: v for k, v in data["model"].items() if k in model_fields})
        return cls(**data)


@dataclass
class RunResult:
    """One bench invocation: environment, resolved config, dataset, cells and (optionally) service figures."""

    environment: Environment
    config: RunConfig
    cells: list[CellResult] = field(default_factory=list)
    dataset: DatasetInfo | None = None
    service: list[ServiceEntry] | None = None
    schema_version: int = SCHEMA_VERSION
    run_id: str = field(default_factory=lambda: new_run_id())
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    recommendation: RecommendationInfo | None = (
        None  # bench matrix: the report's choice, ties and rule (omitted if None)
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for cell in data["cells"]:
            for optional in _OPTIONAL_CELL_FIELDS:
                if not cell.get(optional):
                    cell.pop(optional, None)
        order = ["schema_version", "run_id", "created", "environment", "config", "dataset", "cells", "service"]
        if data.get("recommendation") is not None:
            order.append("recommendation")
        return {k: data[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Build from parsed JSON without validating it (bench compare's reader); :meth:`load` validates and builds."""
        _check_version(data.get("schema_version"))
        return cls(
            environment=data.get("environment") or Environment(),
            config=data.get("config") or RunConfig(),
            cells=[CellResult.from_dict(c) for c in data.get("cells") or []],
            dataset=data.get("dataset"),
            service=data.get("service"),
            schema_version=data["schema_version"],
            run_id=data.get("run_id", ""),
            created=data.get("created", ""),
            recommendation=data.get("recommendation"),
        )

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read results.json (or a directory holding one): the RunResult that checking it against the contract
        built (:func:`validate_results`).

        Lenient as that check is: keys added since an older file was written may be missing, unknown keys of
        nested objects are kept (the records' own are dropped); a present key of the wrong type is refused.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = parse_results_text(path.read_text(encoding="utf-8"), str(path))  # depth, NaN: bench.validity
        except FileNotFoundError as exc:
            raise InputError(f"results file {path} not found") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not a results JSON file ({exc})") from exc
        return validate_results(data, source=str(path))

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write results.json and results.csv atomically into ``out_dir``."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
        json_path, csv_path = out / "results.json", out / "results.csv"
        atomic_write_text(json_path, self.to_json() + "\n")
        atomic_write_text(csv_path, cells_csv(self.cells))
        return json_path, csv_path

    def accuracy_of(self, variant: str, provider: str) -> Accuracy | None:
        """The accuracy of (variant, provider): evaluated once, in the first of its cells that ran."""
        for cell in self.cells:
            if cell.variant == variant and cell.provider == provider and cell.accuracy:
                return cell.accuracy
        return None

    def reference_accuracy(self, reference: str, provider: str) -> tuple[float | None, str | None]:
        """Reference accuracy on ``provider``, else on the first provider that measured it (and which one)."""
        same = self.accuracy_of(reference, provider)
        if same is not None and same.get("accuracy") is not None:
            return same["accuracy"], None
        for cell in self.cells:
            if cell.variant == reference and cell.accuracy and cell.accuracy.get("accuracy") is not None:
                return cell.accuracy["accuracy"], cell.provider
        return None, None


# --- many runs as one table (pandas, imported on first use) ----------------------------------------

FRAME_COLUMNS = (
    "path", "run_id", "created", "machine_id", "command", "variant", "provider", "batch_size", "status",
    "perturbation", "metric", "value", "ci_low", "ci_high", "unit",
)  # fmt: skip
# Every cell's figures, (metric, where in the cell, unit, quantile): a row each, NaN where the cell has none (not
# run, or not measurable here). A latency quantile also gets its 95 % interval (CellResult.latency_interval).
CELL_METRICS: tuple[tuple[str, tuple[str, ...], str, str | None], ...] = (
    ("latency_p50_ms", ("latency_ms", "p50"), "ms", "p50"),
    ("latency_p90_ms", ("latency_ms", "p90"), "ms", "p90"),
    ("latency_p95_ms", ("latency_ms", "p95"), "ms", "p95"),
    ("latency_p99_ms", ("latency_ms", "p99"), "ms", "p99"),
    ("latency_mean_ms", ("latency_ms", "mean"), "ms", None),
    ("throughput_ips", ("throughput_ips",), "images/s", None),
    ("session_create_ms", ("session_create_ms",), "ms", None),
    ("rss_peak_mb", ("memory", "rss_peak_mb"), "MB", None),
    ("gpu_process_peak_mb", ("memory", "gpu_process_peak_mb"), "MB", None),
    ("gpu_device_peak_mb", ("memory", "gpu_device_peak_mb"), "MB", None),
)
# Accuracy figures (Scores, and agreement with the reference variant), clean and per perturbation, in the cells
# that carry them (a (variant, provider)'s first cell): (metric, unit).
ACCURACY_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "fraction"),
    ("balanced_accuracy", "fraction"),
    ("precision", "fraction"),
    ("recall", "fraction"),
    ("f1", "fraction"),
    ("roc_auc", "fraction"),
    ("average_precision", "fraction"),
    ("eer", "fraction"),
    ("log_loss", "nats"),
    ("ece", "fraction"),
    ("flip_rate", "fraction"),  # agreement.flip_rate: decisions that differ from the reference variant's
)


def load_frame(paths: str | Path | Iterable[str | Path], *, intervals: bool = True) -> pd.DataFrame:
    """results.json files (or folders holding one) as one tidy pandas table: a row per run × cell × metric.

    Columns are ``FRAME_COLUMNS``; metrics are ``CELL_METRICS`` (every cell) and ``ACCURACY_METRICS`` (cells
    with accuracy; ``perturbation`` "clean" or the perturbation's name, None for the timing rows). ``ci_low`` /
    ``ci_high`` bound a latency quantile at 95 % where the samples allow (``intervals=False`` skips the
    bootstrap) and an accuracy figure where the results record its interval (``accuracy_ci``, ``roc_auc_ci``, …);
    NaN otherwise. Files are validated
    as :meth:`RunResult.load` reads them.
    """
    import pandas as pd

    rows: list[tuple[Any, ...]] = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        run = RunResult.load(path)
        where = (str(path), run.run_id, run.created, run.environment.get("machine_id"), run.config.get("command"))
        for cell in run.cells:
            key = (*where, cell.variant, cell.provider, cell.batch_size, cell.status)
            for metric, at, unit, quantile in CELL_METRICS:
                value = _dig(cell, at)
                interval = cell.latency_interval(quantile) if intervals and quantile and value is not None else None
                low, high = (interval[1], interval[2]) if interval else (None, None)
                rows.append((*key, None, metric, value, low, high, unit))
            accuracy = cell.accuracy
            passes: list[tuple[str, Accuracy | PerturbedAccuracy]] = [("clean", accuracy)] if accuracy else []
            passes += [(p["perturbation"], p) for p in (accuracy or {}).get("perturbations") or []]
            for name, scores in passes:
                figures: dict[str, Any] = {**scores, "flip_rate": (scores.get("agreement") or {}).get("flip_rate")}
                rows.extend(
                    (*key, name, metric, figures.get(metric), *_interval(figures, metric), unit)
                    for metric, unit in ACCURACY_METRICS
                )
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    frame["created"] = pd.to_datetime(frame["created"], format="ISO8601", utc=True, errors="coerce")
    frame["batch_size"] = frame["batch_size"].astype("int64")
    for column in ("value", "ci_low", "ci_high"):
        frame[column] = frame[column].astype("float64")
    return frame


def _interval(figures: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]:
    """The 95 % interval the results record for an accuracy figure (``<metric>_ci``), or (None, None)."""
    ci = figures.get(f"{metric}_ci")
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _dig(record: Any, at: tuple[str, ...]) -> Any:
    """The value at ``at`` (an attribute, then keys) of a cell, None where any step is missing or None."""
    value = getattr(record, at[0], None)
    for key in at[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus a short random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def cells_csv(cells: list[CellResult]) -> str:
    """Cells flattened to one CSV row each: nested objects → dotted columns (``latency_ms.p50``), lists of
    numbers or names → JSON text; raw samples, replicate indices, predictions and skipped images left out
    (they stay in results.json). Written with the csv module: pandas stays off the measuring path."""
    rows = [_flat(_csv_row(cell)) for cell in cells]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _csv_row(cell: CellResult) -> dict[str, Any]:
    data = asdict(cell)
    for raw in ("samples_ms", "sample_replicates"):
        data.pop(raw, None)
    accuracy = data.get("accuracy")
    if isinstance(accuracy, dict):
        data["accuracy"] = {k: v for k, v in accuracy.items() if k not in ("predictions", "skipped")}
    data["providers_effective"] = ",".join(data.get("providers_effective") or [])
    return data


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                out[name] = json.dumps(value, default=json_default)
        else:
            out[name] = "" if value is None else value
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:  # disk full: exit 2 with the folder and the size
            raise no_space_error(path.parent, len(text.encode("utf-8"))) from None
        raise


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass
class LoadResult:
    """One load run (ARCHITECTURE.md, LoadResult); extras after ``server``. Latencies are of 2xx answers."""

    url: str
    endpoint: str
    mode: Literal["open", "closed"]
    arrival: Literal["constant", "poisson"] | None
    target_rate: float | None
    achieved_rate: float | None
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]  # error key ("503", "timeout", "connect", "disconnected", ...) → count
    latency_ms: LoadLatency
    send_lag_ms: SendLag
    generator_ceiling_rps: float | None
    server: ServerMemory
    concurrency: int | None = None
    throughput_rps: float | None = None  # 2xx answers per second of wall time (drain included)
    wall_s: float | None = None  # first send to last answer (or drain deadline)
    max_in_flight: int = 0
    files_per_request: int | None = None
    error_examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: LoadConfig = field(default_factory=LoadConfig)
    max_rate: MaxRate | None = None  # --find-max: {slo_p99_ms, rate_rps, limited_by, steps}
    samples_ms: list[float] = field(default_factory=list)  # raw latencies of 2xx answers, in send order
    # --generators N (omitted while empty, so single-generator files keep their shape):
    generators: list[GeneratorFigures] = field(default_factory=list)  # each arrival stream's own figures
    valid: bool | None = None  # False: a generator ran above 70 % of its own ceiling (see warnings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("generators", "valid"):
            if data.get(optional) in (None, []):
                data.pop(optional, None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


# --- validation and JSON Schema (pydantic, imported on first use) ----------------------------------


_OPTIONAL_CELL_FIELDS = ("sample_replicates", "replicates", "noise", "placement", "profile")

# Unknown keys of nested objects are kept, not dropped, by the validated RunResult: a file from a newer bench
# loads and is written back whole. (The records' own unknown keys are ignored, as their constructors would.)
for _nested in [v for v in list(globals().values()) if is_typeddict(v) and v.__module__ == __name__]:
    _nested.__pydantic_config__ = {"extra": "allow"}


def _check_version(version: Any) -> None:
    if version != SCHEMA_VERSION:
        raise InputError(f"results schema_version {version!r} is not supported (this bench reads {SCHEMA_VERSION})")


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def validate_results(data: dict[str, Any], *, source: str | None = None) -> RunResult:
    """Check parsed results.json against the contract and return the RunResult pydantic built from it; InputError
    naming the first bad field if it does not fit.

    Lenient where old and future files need it, strict where a reader would go wrong: unknown keys are
    allowed, keys of nested objects may be missing (older files), but every present key must have its
    type exactly (JSON number for a float, integer for an int; no ``"8"`` for 8).
    """
    from pydantic import ValidationError

    where = source or "results"
    if not isinstance(data, dict) or "cells" not in data:
        raise InputError(f"{where} is not a bench results file (no 'cells')")
    _check_version(data.get("schema_version"))
    try:
        run: RunResult = _adapter(RunResult).validate_json(json.dumps(data, default=json_default), strict=True)
    except ValidationError as exc:
        raise InputError(f"{where} does not match the results contract: {describe_validation_error(exc)}") from None
    check_values(data, where)  # batch sizes ≥ 1, finite non-negative figures (bench.validity)
    for unknown in ("run_id", "created"):  # a file without them: say so, rather than take the defaults' "now"
        if unknown not in data:
            setattr(run, unknown, "")
    return run


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic ValidationError in one line: ``cells[0].batch_size: ... , got 'one'``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    msg = first["msg"][:1].lower() + first["msg"][1:]
    value = first.get("input")
    got = ""
    if first["type"] != "missing" and (value is None or isinstance(value, (str, int, float, bool))):
        text = repr(value)
        got = f", got {text if len(text) <= 60 else text[:57] + '...'}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or 'top level'}: {msg}{got}{more}"


def schema_of(cls: type, title: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one of the contract's records, as pydantic derives it from the types."""
    schema = _adapter(cls).json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "$comment": f"{title}; generated from bench's types, do not edit", **schema}


def results_schema() -> dict[str, Any]:
    """JSON Schema of results.json (RunResult, with its cells, service entries and LoadResult)."""
    schema = schema_of(RunResult, f"bench results.json, schema_version {SCHEMA_VERSION}")
    # What validate_results checks beyond the dataclass: a version it reads, and cells.
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION, "title": "Schema Version", "type": "integer"}
    schema["required"] = ["schema_version", *schema["required"], "cells"]
    return schema


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as published (docs/*.schema.json) and printed: indented JSON and a final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
