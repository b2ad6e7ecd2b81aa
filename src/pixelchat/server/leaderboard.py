"""Ranking models from "which is better?" votes: Bradley–Terry strengths on an Elo-like scale, and
the standings table that adds vote counts and star ratings.

Pure functions over (model_a, model_b, outcome) triples; the server's `/api/leaderboard` feeds them
from its database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

CENTRE = 1000.0  # the score of the virtual average opponent the prior ties with
ELO_SCALE = 400.0  # points per factor of ten in strength, as in Elo

Comparison = tuple[str, str, float]  # (model_a, model_b, outcome): 1 a won, 0 b won, 0.5 a tie


def bradley_terry(comparisons: Iterable[Comparison], iterations: int = 10_000, prior: float = 1.0,
                  tol: float = 1e-10, models: Iterable[str] = ()) -> dict[str, float]:
    """Each model's score, ``1000 + 400·log10(strength)``, fitted to ``comparisons``; ``models`` are
    scored too even without comparisons.

    Strengths maximise the Bradley–Terry likelihood, P(a beats b) = p_a / (p_a + p_b), by the
    minorise–maximise update of Hunter (2004, eq. 3), p_i ← W_i / Σ_j n_ij / (p_i + p_j), where a tie
    is half a win to each side. ``prior`` adds that many virtual games to every model, each a tie
    against a fixed opponent of strength 1 (score 1000): a model with only wins or only losses stays
    finite, and one with no games scores 1000.
    """
    if prior <= 0:
        raise ValueError(f"prior must be positive, not {prior}")
    comparisons = list(comparisons)
    names = sorted({m for a, b, _ in comparisons for m in (a, b)} | set(models))
    index = {m: i for i, m in enumerate(names)}
    games = np.zeros((len(names), len(names)))  # games[i, j]: comparisons between i and j
    wins = np.zeros(len(names))
    for a, b, outcome in comparisons:
        if a == b:
            raise ValueError(f"a comparison of {a!r} with itself")
        if outcome not in (0, 0.5, 1):
            raise ValueError(f"an outcome is 1 (a won), 0 (b won) or 0.5 (a tie), not {outcome}")
        i, j = index[a], index[b]
        games[i, j] += 1
        games[j, i] += 1
        wins[i] += outcome
        wins[j] += 1 - outcome
    strength = np.ones(len(names))
    for _ in range(iterations):
        pair_sums = strength[:, None] + strength[None, :]  # (K, K)
        new = (wins + prior / 2) / ((games / pair_sums).sum(axis=1) + prior / (strength + 1))
        new = new * prior_scale(new)
        converged = np.abs(np.log(new / strength)).max(initial=0.0) < tol
        strength = new
        if converged:
            break
    return {m: CENTRE + ELO_SCALE * math.log10(strength[index[m]]) for m in names}


def prior_scale(strength: np.ndarray) -> float:
    """The factor c for which ``c * strength`` best fits the prior's ties against strength 1.

    The comparisons' likelihood does not change when every strength is multiplied by the same c, so
    only the prior fixes the scale, and MM steps alone approach it at a rate of about prior / games:
    solving for c after each step makes the fit converge in few steps. The best c solves
    Σ_i tanh((log c + log p_i) / 2) = 0, found by bisection."""
    logs = np.log(strength)
    lo, hi = -logs.max(initial=0.0), -logs.min(initial=0.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.tanh((mid + logs) / 2).sum() > 0:
            hi = mid
        else:
            lo = mid
    return math.exp((lo + hi) / 2)


@dataclass
class Standing:
    model: str
    score: float
    votes: int
    wins: int
    losses: int
    ties: int
    mean_stars: float | None
    ratings: int
    own_votes: int = 0  # votes between two of its own pictures: counted in ``votes``, not in the score


def standings(comparisons: Iterable[Comparison], ratings: Iterable[tuple[str, int]] = (),
              own_votes: Iterable[str] = (), **fit_options) -> list[Standing]:
    """One row per model that was compared or rated, best score first: its Bradley–Terry score (see
    `bradley_terry`, which takes ``fit_options``), its votes won, lost and tied, and the mean of its
    ``ratings`` (pairs of model and stars). ``own_votes`` names the model of each vote between two of
    its own pictures (say, two seeds of one prompt): they count in its votes and leave its score alone,
    since they say nothing about one model against another."""
    comparisons = list(comparisons)
    stars: dict[str, list[int]] = {}
    for model, given in ratings:
        stars.setdefault(model, []).append(given)
    own = list(own_votes)
    scores = bradley_terry(comparisons, models=[*stars, *own], **fit_options)
    rows = {m: Standing(m, s, 0, 0, 0, 0, None, 0) for m, s in scores.items()}
    for model in own:
        rows[model].votes += 1
        rows[model].own_votes += 1
    for a, b, outcome in comparisons:
        for model, result in ((a, outcome), (b, 1 - outcome)):
            row = rows[model]
            row.votes += 1
            if result == 1:
                row.wins += 1
            elif result == 0:
                row.losses += 1
            else:
                row.ties += 1
    for model, given in stars.items():
        rows[model].mean_stars = sum(given) / len(given)
        rows[model].ratings = len(given)
    return sorted(rows.values(), key=lambda r: (-r.score, r.model))
