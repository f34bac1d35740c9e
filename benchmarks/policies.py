"""Section `policies`: the project's retry policies on Brooker's contention model, and the plot.

The limit: one write per client (N calls) is the least work any policy can do; jitter is judged
by how close to N it comes and how long the last client waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.contention import (
    BASE_S,
    CAP_S,
    NET_MEAN_S,
    NET_SD_S,
    POLICIES,
    average,
    loglog_slope,
)
from chaos.report.plotting import new_figure, save


def run(clients: Sequence[int], seeds: int, plot_path: Path) -> dict[str, Any]:
    rows = [average(p, n, range(seeds)) for p in POLICIES for n in clients]
    by = {(r["policy"], r["clients"]): r for r in rows}
    top = max(clients)
    summary = []
    for policy in POLICIES:
        calls = [float(by[(policy, n)]["calls_mean"]) for n in clients]
        times = [float(by[(policy, n)]["time_ms_mean"]) for n in clients]
        summary.append(
            {
                "policy": policy,
                "calls_at_max_clients": by[(policy, top)]["calls_mean"],
                "calls_over_minimum": round(calls[-1] / top, 2),
                "calls_vs_exponential": round(
                    calls[-1] / float(by[("exponential", top)]["calls_mean"]), 3
                ),
                "calls_loglog_slope": loglog_slope([float(n) for n in clients], calls),
                "time_ms_at_max_clients": times[-1],
            }
        )
    _plot(rows, clients, plot_path)
    return {
        "model": {
            "clients": list(clients),
            "seeds": seeds,
            "base_s": BASE_S,
            "cap_s": CAP_S,
            "network_delay": f"|N({NET_MEAN_S * 1000:g} ms, {NET_SD_S * 1000:g} ms)|",
        },
        "rows": rows,
        "summary": summary,
        "plot": plot_path.name,
    }


def _plot(rows: list[dict[str, Any]], clients: Sequence[int], path: Path) -> None:
    fig = new_figure(11, 4.2)
    work, took = fig.subplots(1, 2)
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        work.plot(clients, [r["calls_mean"] for r in mine], marker="o", label=policy)
        took.plot(clients, [r["time_ms_mean"] for r in mine], marker="o", label=policy)
    work.set(title="Work: total calls", xlabel="clients", ylabel="calls (mean)")
    took.set(title="Completion time", xlabel="clients", ylabel="ms (mean, log scale)", yscale="log")
    for ax in (work, took):
        ax.grid(alpha=0.3)
    work.legend()
    fig.suptitle("Brooker's OCC contention model, herdlab RetryPolicy waits (simulated time)")
    save(fig, path)
