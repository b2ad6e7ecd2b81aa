"""Bradley–Terry scores and standings on synthetic votes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pixelchat.server.leaderboard import bradley_terry, standings


def simulate(true_scores: dict[str, float], n: int, seed: int, tie_rate: float = 0.0) -> list:
    """``n`` votes between random pairs, won with Elo odds; a share ``tie_rate`` of them are ties."""
    rng = np.random.default_rng(seed)
    names = list(true_scores)
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        if rng.random() < tie_rate:
            votes.append((a, b, 0.5))
            continue
        p_a = 1 / (1 + 10 ** ((true_scores[b] - true_scores[a]) / 400))
        votes.append((a, b, 1.0 if rng.random() < p_a else 0.0))
    return votes


def test_recovers_the_order_and_gaps_of_known_strengths():
    true = {"m1": 1300.0, "m2": 1150.0, "m3": 1000.0, "m4": 900.0, "m5": 700.0}
    scores = bradley_terry(simulate(true, 6000, seed=0))
    assert sorted(scores, key=scores.get, reverse=True) == list(true)
    for a in true:  # gaps within 40 points of the truth with 2,400 votes per model
        for b in true:
            assert abs((scores[a] - scores[b]) - (true[a] - true[b])) < 40, (a, b, scores)


def test_ties_do_not_change_the_order():
    true = {"m1": 1200.0, "m2": 1000.0, "m3": 800.0}
    scores = bradley_terry(simulate(true, 3000, seed=1, tie_rate=0.3))
    assert scores["m1"] > scores["m2"] > scores["m3"]


def test_matches_the_closed_form_for_two_models():
    # with (almost) no prior the fit is the maximum-likelihood p_a / p_b = wins_a / wins_b
    scores = bradley_terry([("a", "b", 1)] * 3 + [("a", "b", 0)], prior=1e-6)
    assert scores["a"] - scores["b"] == pytest.approx(400 * math.log10(3), abs=0.01)


def test_symmetric_under_swapping_sides_and_names():
    votes = [("a", "b", 1), ("a", "b", 1), ("b", "c", 0.5), ("c", "a", 1), ("b", "c", 0)]
    scores = bradley_terry(votes)
    swapped = bradley_terry([(b, a, 1 - o) for a, b, o in votes])
    assert swapped == pytest.approx(scores)
    renamed = bradley_terry([("z" + a, "z" + b, o) for a, b, o in votes])
    assert {k[1:]: v for k, v in renamed.items()} == pytest.approx(scores)
    two = bradley_terry([("a", "b", 1)] * 4)
    assert two["a"] - 1000 == pytest.approx(1000 - two["b"])


def test_a_tie_is_half_a_win_to_each():
    assert bradley_terry([("a", "b", 0.5)] * 4) == pytest.approx({"a": 1000.0, "b": 1000.0})
    assert bradley_terry([("a", "b", 0.5)] * 2) == pytest.approx(bradley_terry([("a", "b", 1), ("b", "a", 1)]))
    one_tie = bradley_terry([("a", "b", 1), ("a", "b", 0.5)])
    only_win = bradley_terry([("a", "b", 1)])
    assert 1000 < one_tie["a"] < only_win["a"]  # a tie after a win lowers the winner's score


def test_the_prior_keeps_unbeaten_models_finite_and_ordered():
    few, many = bradley_terry([("a", "b", 1)] * 2), bradley_terry([("a", "b", 1)] * 20)
    assert all(math.isfinite(s) for s in (*few.values(), *many.values()))
    assert 1000 < few["a"] < many["a"] and many["b"] < few["b"] < 1000
    weaker_prior = bradley_terry([("a", "b", 1)] * 2, prior=0.1)
    assert weaker_prior["a"] > few["a"]


def test_a_single_model_and_empty_input():
    assert bradley_terry([]) == {}
    assert bradley_terry([], models=["solo"]) == {"solo": 1000.0}
    assert standings([]) == []


@pytest.mark.parametrize("votes, prior", [([("a", "a", 1)], 1.0), ([("a", "b", 2)], 1.0), ([("a", "b", 1)], 0.0)])
def test_refuses_bad_input(votes, prior):
    with pytest.raises(ValueError):
        bradley_terry(votes, prior=prior)


def test_standings_count_votes_and_ratings():
    votes = [("a", "b", 1), ("a", "b", 1), ("b", "a", 1), ("a", "c", 0.5)]
    rows = standings(votes, [("a", 5), ("a", 4), ("d", 2)])
    assert [r.model for r in rows][0] == "a"
    by = {r.model: r for r in rows}
    assert (by["a"].votes, by["a"].wins, by["a"].losses, by["a"].ties) == (4, 2, 1, 1)
    assert (by["b"].votes, by["b"].wins, by["b"].losses, by["b"].ties) == (3, 1, 2, 0)
    assert (by["a"].mean_stars, by["a"].ratings) == (4.5, 2)
    assert by["d"].score == pytest.approx(1000.0) and (by["d"].votes, by["d"].mean_stars) == (0, 2.0)  # rated, never compared
    assert by["c"].mean_stars is None and by["c"].ratings == 0
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)


def test_votes_between_a_models_own_pictures_count_and_leave_its_score_alone():
    votes = [("big", "small", 1.0), ("big", "small", 0.5)]
    plain = {r.model: r for r in standings(votes)}
    rows = {r.model: r for r in standings(votes, own_votes=["big", "big", "solo"])}
    assert (rows["big"].votes, rows["big"].own_votes) == (4, 2) and rows["small"].own_votes == 0
    assert rows["big"].score == pytest.approx(plain["big"].score)
    assert rows["solo"].votes == 1 and rows["solo"].score == pytest.approx(1000.0)  # only its own: average
