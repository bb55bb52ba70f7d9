"""The short human summary ``bench load`` prints without --json."""

from __future__ import annotations

from bench.formatting import fmt
from bench.load.spec import ENDPOINTS
from bench.noise import noisy_figure
from bench.results import LoadResult, MaxRate, MaxRateEdge


def summary_lines(result: LoadResult) -> list[str]:
    """A short human summary of a LoadResult (``bench load`` without --json)."""
    lat, lag, srv = result.latency_ms, result.send_lag_ms, result.server
    how = (
        f"open loop, {result.arrival} arrivals, target {fmt(result.target_rate, 1)}/s"
        if result.mode == "open"
        else f"closed loop, {result.concurrency} in flight (mode: closed)"
    )
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"
    lines = [
        f"bench load · {result.url}{ENDPOINTS[result.endpoint][1]} · {how}",
        f"requests {result.requests} in {fmt(result.duration_s)} s · achieved {fmt(result.achieved_rate, 1)}/s · "
        f"ok {result.ok} · throughput {fmt(result.throughput_rps, 1)}/s · errors {errors}",
        "latency ms"
        + (" (from scheduled send)" if result.mode == "open" else "")
        + ": "
        + " · ".join(f"{k} {fmt(lat.get(k), 1)}" for k in ("p50", "p90", "p99", "p999", "max", "mean")),
    ]
    if result.mode == "open":
        lines.append(f"send lag ms: p50 {fmt(lag.get('p50'))} · p99 {fmt(lag.get('p99'))} · max {fmt(lag.get('max'))}")
    how = "closed-loop burst on /health/live"
    if result.generators:
        how = f"the sum of {len(result.generators)} generators' own, each a {how} while the others waited"
    lines.append(f"generator ceiling: {fmt(result.generator_ceiling_rps, 0)}/s ({how})")
    if result.generators:
        verdict = {True: "valid", False: "INVALID (a generator ran above 70% of its ceiling)", None: "not judged"}
        lines.append(f"{len(result.generators)} generators, samples pooled · run {verdict[result.valid]}")
        for g in result.generators:
            lag = g.get("send_lag_ms") or {}
            share = (
                f"{fmt(g.get('target_rate'), 1)}/s"
                if g.get("target_rate") is not None
                else f"{g.get('concurrency')} in flight"
            )
            lines.append(
                f"  #{g['index']} {g.get('where')}: {share} · requests {g.get('requests')} · lag p99 "
                f"{fmt(lag.get('p99'))} ms · ceiling {fmt(g.get('ceiling_rps'), 0)}/s"
                + (f" ({g['load_fraction']:.1%} of it)" if g.get("load_fraction") is not None else "")
            )
    lines.append(
        f"server RSS MB {fmt(srv.get('rss_start_mb'), 1)} → {fmt(srv.get('rss_end_mb'), 1)} · GPU MB "
        f"{fmt(srv.get('gpu_start_mb'), 1)} → {fmt(srv.get('gpu_end_mb'), 1)} · leak suspected: "
        f"{fmt(srv.get('leak_suspected'))}"
    )
    if result.max_rate is not None:
        lines += max_rate_lines(result.max_rate)
    return lines


def max_rate_lines(mr: MaxRate) -> list[str]:
    """The find-max answer as a bracket with the p99 interval at each edge, then each step as it was judged."""
    rule = mr.get("rule") or {}

    def edge(e: MaxRateEdge | None, name: str) -> str:
        if e is None:
            return f"{name} none"
        ci = e.get("p99_ci_ms")
        interval = f" [{fmt(ci[0], 1)}, {fmt(ci[1], 1)}]" if ci else ""
        return f"{name} {fmt(e['rate'], 1)}/s (p99 {fmt(e.get('p99_ms'), 1)}{interval} ms)"

    lines = [
        f"find-max (p99 ≤ {mr['slo_p99_ms']:g} ms, no errors): "
        + (
            f"{edge(mr.get('highest_pass'), 'highest pass')} · {edge(mr.get('lowest_fail'), 'lowest fail')}"
            if "highest_pass" in mr
            else f"{fmt(mr['rate_rps'], 1) + '/s' if mr['rate_rps'] is not None else 'none'}"
        )
        + f" (stopped by {mr['limited_by']})"
        + (f" — {mr['reason']}" if mr.get("reason") else "")
    ]
    if rule:
        lines.append(
            f"  each step: ≥ {rule['step_requests']} requests and ≥ {fmt(rule['min_step_s'])} s; the first "
            f"{rule['warmup_fraction']:.0%} of answers is warm-up, the p50/p99 below are of the rest "
            f"(≥ {rule['answers_needed']} answers: 5 beyond the p99)"
        )
    why = noisy_figure(mr)
    if why:
        lines.append(f"  ⚠ noisy: {why}")
    for s in mr["steps"]:  # the why holds the p99's interval
        lines.append(
            f"  {s['rate']:>9.2f}/s  p50 {fmt(s['p50_ms'], 1):>7}  p99 {fmt(s['p99_ms'], 1):>7}  "
            f"{'pass' if s['passed'] else 'FAIL'}  {s['why']}"
        )
    return lines
