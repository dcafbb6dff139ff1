"""Figures for ``specdiff plot`` (matplotlib, Agg, no pyplot state).

Each function takes plain arrays and returns a ``matplotlib.figure.Figure``; the command
line renders them to PNG bytes and writes the files only once every figure is made.
"""

from __future__ import annotations

import io

import numpy as np


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _style(name: str) -> dict:
    """The designed schedule(s) in thick black lines, heuristics thin and coloured."""
    if name.startswith("spectral") or name.endswith(".json"):
        return {"lw": 2.2, "zorder": 3}
    return {"lw": 1.0, "alpha": 0.85}


def schedules_figure(schedules: dict) -> object:
    """Log-SNR ρ and ᾱ against the step, one line per schedule.

    Args:
      schedules: name → ``Schedule`` (levels noisiest first).

    Returns:
      A two-panel figure; the x-axis is the step k when every schedule has the same S,
      otherwise the normalised position k/(S − 1).
    """
    fig, (a, b) = _figure(2)
    sizes = {s.num_steps for s in schedules.values()}
    same = len(sizes) == 1
    for name, sch in schedules.items():
        rho = np.asarray(sch.log_snr, np.float64)
        S = rho.size
        x = np.arange(S) if same else np.arange(S) / max(S - 1, 1)
        ab = 1.0 / (1.0 + np.exp(-rho))
        a.plot(x, rho, ".-", label=name, **_style(name))
        b.plot(x, ab, ".-", label=name, **_style(name))
    xlabel = "step k (noisiest first)" if same else "position k/(S − 1)"
    a.set(xlabel=xlabel, ylabel="log-SNR ρ = log(ᾱ/(1 − ᾱ))", title="schedules in log-SNR")
    b.set(xlabel=xlabel, ylabel="ᾱ", title="schedules in ᾱ (signal level)")
    a.legend(fontsize=7)
    return fig


def transfer_figure(lam_grid, curves: dict, eigenvalues, sampler_name: str) -> object:
    """|H(λ)| against λ (log-log), one curve per schedule, the data eigenvalues as ticks.

    Args:
      lam_grid: (n,) positive λ at which the curves are given.
      curves: name → (n,) H(λ) values.
      eigenvalues: the data eigenvalues (zeros are not drawn).
      sampler_name: for the title.
    """
    fig, (ax,) = _figure(1, 6.5, 4.5)
    lam_grid = np.asarray(lam_grid, np.float64)
    for name, h in curves.items():
        ax.loglog(lam_grid, np.abs(np.asarray(h, np.float64)), label=name, **_style(name))
    ev = np.asarray(eigenvalues, np.float64)
    ev = ev[ev > 0]
    if ev.size:
        ax.plot(
            ev, np.full(ev.shape, 0.02), "|", color="k", ms=10, transform=ax.get_xaxis_transform()
        )
    ax.set(
        xlabel="eigenvalue λ (ticks: the data's eigenvalues)",
        ylabel="|H(λ)|",
        title=f"spectral transfer function, {sampler_name}",
    )
    ax.legend(fontsize=7)
    return fig


def loss_figure(curves: dict, metric_label: str, points: dict | None = None) -> object:
    """Loss against the number of steps S (log-log).

    Args:
      curves: name → (steps, losses); non-finite losses are skipped.
      metric_label: y-axis label (e.g. "W2").
      points: optional name → (S, loss) drawn as single markers (given schedule files).
    """
    fig, (ax,) = _figure(1, 6.5, 4.5)
    for name, (steps, losses) in curves.items():
        s = np.asarray(steps, np.float64)
        v = np.asarray([np.nan if x is None else x for x in losses], np.float64)
        ok = np.isfinite(v) & (v > 0)
        if ok.any():
            ax.loglog(
                s[ok], v[ok], "o-" if name == "spectral" else ".-", label=name, **_style(name)
            )
    for name, (S, loss) in (points or {}).items():
        if loss is not None and np.isfinite(loss) and loss > 0:
            ax.loglog([S], [loss], "*", ms=12, label=name)
    ax.set(xlabel="S (sampler steps)", ylabel=metric_label, title=f"{metric_label} vs steps")
    ax.legend(fontsize=7)
    return fig


def to_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
