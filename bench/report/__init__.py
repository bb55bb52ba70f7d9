"""Release reports from a RunResult: Markdown (en, th) and plots; re-rendered without re-measuring.

    from bench.report import write_report
    write_report(RunResult.load("reports/rc1"), "reports/rc1", langs=("en", "th"))

Files: ``report.md`` (English), ``report.th.md`` (Thai), ``plots/*.png`` (shared by both); with ``html=True``
also ``report.html`` / ``report.th.html`` (one file each, plots inlined). The report opens with the claims of
the hand-written report answered (``claims``: a :class:`ClaimSet`; default: recorded in the run, else the seed's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import where_time_goes
from bench.report.analysis import recommend
from bench.report.catalog import catalog
from bench.report.claims import ClaimSet, claims_for, load_claims
from bench.report.detector_plots import planned_reliability, reliability_plots
from bench.report.html import markdown_to_html
from bench.report.markdown import render_markdown
from bench.report.plots import draw_plots, planned_plots
from bench.report.policy import Policy, PolicyVerdict, evaluate_policy, load_policy, policy_for
from bench.results import RecommendationInfo, RunResult, atomic_write_text

REPORT_FILES = {"en": "report.md", "th": "report.th.md"}
HTML_FILES = {"en": "report.html", "th": "report.th.html"}


@dataclass
class ReportOutput:
    """What was written, and the policy verdict and recommendation the report states."""

    files: list[Path]
    verdict: PolicyVerdict
    recommendation: str | None  # "variant · provider · batch N" in English, or None when nothing passes
    detail: RecommendationInfo | None = None  # Recommendation.as_dict(): choice, ties with intervals, the tie rule

    def summary_lines(self) -> list[str]:
        """What a run ends by saying: the release checks, the recommendation and its ties."""
        verdict = self.verdict
        lines = [
            f"release checks: {'pass' if verdict.passed else 'fail'} ({len(verdict.passing)} of "
            f"{len(verdict.candidates)} candidate cells pass every check) · recommendation: "
            f"{self.recommendation or 'none'}"
        ]
        detail = self.detail or {}
        status, margin = detail.get("status"), detail.get("margin")

        def names(rows: list[Any]) -> str:
            return ", ".join(f"{t['variant']}/{t['provider']}/b{t['batch_size']}" for t in rows)

        if status is not None and margin is not None:
            lines.append(f"recommendation {status} on {detail.get('rank_by')} (practical margin ±{margin:.0%})")
        tied = detail.get("tied") or []
        if tied:
            lines.append(f"equivalent within the margin: {names(tied)}; chosen by: {detail.get('rule')}")
        undecided = detail.get("undecided") or []
        if undecided:
            needed = detail.get("replicates_needed")
            settle = f"about {needed} replicates per cell" if needed else "more calls"
            lines.append(f"cannot be told apart from the best yet: {names(undecided)} ({settle}, or --decide SECONDS)")
        return lines


def write_report(
    result: RunResult,
    out_dir: str | Path,
    langs: tuple[str, ...] = ("en", "th"),
    policy: Policy | None = None,
    draw: bool = True,
    claims: ClaimSet | None = None,
    html: bool = False,
) -> ReportOutput:
    """Plots once, then one Markdown file per language (and its HTML copy with ``html``), all into ``out_dir``."""
    out = Path(out_dir)
    policy = policy or policy_for(result)
    claims = claims or claims_for(result)
    for lang in langs:
        catalog(lang)  # an unknown language fails before anything is drawn
    plots = draw_plots(result, out, policy) if draw else planned_plots(result)
    plots.update(where_time_goes.draw(result, out) if draw else {})  # bench matrix --profile: op-type shares
    plots.update(reliability_plots(result, out) if draw else planned_reliability(result))  # one per variant
    files = [f"{p.file}" for p in plots.values() if p.file and draw]
    written = [out / f for f in files]
    for lang in langs:
        path = out / REPORT_FILES[lang]
        text = render_markdown(result, lang, policy, plots, claims)
        atomic_write_text(path, text)
        written.append(path)
        if html:
            page = out / HTML_FILES[lang]
            title = text.splitlines()[0].lstrip("# ").strip() if text else "bench report"
            atomic_write_text(page, markdown_to_html(text, out, lang, title))
            written.append(page)
    verdict = evaluate_policy(result, policy)
    rec = recommend(result, verdict)
    choice = rec.choice.cell if rec.choice else None
    chosen = (
        catalog("en").t("common.cell", variant=choice.variant, provider=choice.provider, batch=choice.batch_size)
        if choice
        else None
    )
    return ReportOutput(files=written, verdict=verdict, recommendation=chosen, detail=rec.as_dict())


def publish_release(
    result: RunResult, out_dir: Path, policy: Policy, claims: ClaimSet, html: bool = False
) -> ReportOutput:
    """A finished matrix's last steps: record the claims, write the reports (en, th) and plots, then the results
    again with the recommendation the report made."""
    result.config["claims"] = claims.to_config()
    report = write_report(result, out_dir, langs=("en", "th"), policy=policy, claims=claims, html=html)
    result.recommendation = report.detail
    result.write(out_dir)
    return report


__all__ = [
    "HTML_FILES",
    "REPORT_FILES",
    "ClaimSet",
    "Policy",
    "PolicyVerdict",
    "ReportOutput",
    "claims_for",
    "evaluate_policy",
    "load_claims",
    "load_policy",
    "policy_for",
    "publish_release",
    "write_report",
]
