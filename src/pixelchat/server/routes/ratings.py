"""People's opinions of pictures: star ratings (one per user and picture), "which is better?" votes
between two pictures, and the model leaderboard built from them. A user may rate and vote on any
picture they may see."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from pixelchat.server import access
from pixelchat.server.deps import CurrentUser, SessionDep
from pixelchat.server.errors import APIError, responses
from pixelchat.server.leaderboard import Standing, standings
from pixelchat.server.models import ImageRow, Rating, User, Vote, utcnow
from pixelchat.server.routes import Timestamp

router = APIRouter(prefix="/api", tags=["ratings"])

OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5}


class RatingIn(BaseModel):
    model_config = ConfigDict(strict=True)

    stars: int = Field(ge=1, le=5)


class RatingPublic(BaseModel):
    image_id: str
    stars: int
    created: Timestamp


class RatingSummary(BaseModel):
    mine: int | None
    mean: float | None
    count: int


class VoteIn(BaseModel):
    model_config = ConfigDict(strict=True)

    image_a: str
    image_b: str
    winner: Literal["a", "b", "tie"]


class VotePublic(BaseModel):
    id: int
    image_a: str
    image_b: str
    winner: Literal["a", "b", "tie"]
    created: Timestamp


class Leaderboard(BaseModel):
    models: list[Standing]
    method: Literal["bradley-terry"] = "bradley-terry"


@router.put("/images/{image_id}/rating", response_model=RatingPublic, responses=responses(404))
def rate_image(image_id: str, body: RatingIn, user: CurrentUser, db: SessionDep) -> RatingPublic:
    """Give the picture 1–5 stars, replacing the caller's earlier rating of it."""
    access.image_for(db, user, image_id)
    rating = db.get(Rating, (user.id, image_id))
    if rating is None:
        try:
            rating = Rating(user_id=user.id, image_id=image_id, stars=body.stars)
            db.add(rating)
            db.commit()
        except IntegrityError:  # a concurrent request rated it first: replace that one
            db.rollback()
            rating = db.get(Rating, (user.id, image_id))
    rating.stars = body.stars
    db.commit()
    return RatingPublic(image_id=image_id, stars=rating.stars, created=rating.created)


@router.get("/images/{image_id}/rating", response_model=RatingSummary, responses=responses(404))
def get_rating(image_id: str, user: CurrentUser, db: SessionDep) -> RatingSummary:
    """The caller's stars for the picture, and everyone's mean and count."""
    access.image_for(db, user, image_id)
    mine = db.scalar(select(Rating.stars).where(Rating.user_id == user.id, Rating.image_id == image_id))
    mean, count = db.execute(select(func.avg(Rating.stars), func.count()).where(Rating.image_id == image_id)).one()
    return RatingSummary(mine=mine, mean=None if mean is None else float(mean), count=count)


@router.delete("/images/{image_id}/rating", status_code=204, response_class=Response, responses=responses(404))
def delete_rating(image_id: str, user: CurrentUser, db: SessionDep) -> Response:
    """Withdraw the caller's rating (nothing happens if there was none)."""
    access.image_for(db, user, image_id)
    rating = db.get(Rating, (user.id, image_id))
    if rating is not None:
        db.delete(rating)
        db.commit()
    return Response(status_code=204)


def visible(db: Session, user: User, image_id: str, param: str) -> ImageRow:
    try:
        return access.image_for(db, user, image_id)
    except APIError as e:
        e.param = param
        raise


FLIPPED = {"a": "b", "b": "a", "tie": "tie"}


@router.post("/votes", status_code=201, response_model=VotePublic,
             responses={200: {"model": VotePublic, "description": "Your earlier vote on the pair, replaced"},
                        **responses(404)})
def cast_vote(body: VoteIn, response: Response, user: CurrentUser, db: SessionDep) -> VotePublic:
    """Say which of two pictures is better, or that they tie. A user has one vote per pair (in either
    order): voting again replaces it (200)."""
    if body.image_a == body.image_b:
        raise APIError(400, "A vote compares two different pictures.", param="image_b", code="invalid_value")
    pictures = visible(db, user, body.image_a, "image_a"), visible(db, user, body.image_b, "image_b")
    if len({same_prompt(row.prompt) for row in pictures}) > 1:  # like with like, or the vote says nothing
        raise APIError(400, "A vote compares two pictures of the same prompt; these are of "
                            f"'{pictures[0].prompt}' and '{pictures[1].prompt}'.", param="image_b",
                       code="invalid_value")
    # stored with the smaller id first, so the pair in either order is one row (unique per user)
    swap = body.image_a > body.image_b
    first, second = (body.image_b, body.image_a) if swap else (body.image_a, body.image_b)
    winner = FLIPPED[body.winner] if swap else body.winner
    pair = Vote.user_id == user.id, Vote.image_a == first, Vote.image_b == second
    vote = db.scalar(select(Vote).where(*pair))
    if vote is None:
        try:
            vote = Vote(user_id=user.id, image_a=first, image_b=second, winner=winner)
            db.add(vote)
            db.commit()
            return VotePublic(id=vote.id, image_a=body.image_a, image_b=body.image_b, winner=body.winner,
                              created=vote.created)
        except IntegrityError:  # a concurrent request voted on the pair first: replace that vote
            db.rollback()
            vote = db.scalar(select(Vote).where(*pair))
    vote.winner, vote.created = winner, utcnow()
    db.commit()
    response.status_code = 200
    return VotePublic(id=vote.id, image_a=body.image_a, image_b=body.image_b, winner=body.winner,
                      created=vote.created)


def same_prompt(prompt: str) -> str:
    """What makes two pictures like with like: the same prompt, whatever its case and spacing."""
    return " ".join(prompt.casefold().split())


@router.get("/leaderboard", response_model=Leaderboard)
def leaderboard(user: CurrentUser, db: SessionDep) -> Leaderboard:
    """Models ranked by a Bradley–Terry fit to every vote between pictures of one prompt by two
    different models (1000 is average; 400 points is ten-to-one odds), with their star ratings. A vote
    between two pictures of one model counts in its votes (``own_votes``) and not in its score."""
    a, b = aliased(ImageRow), aliased(ImageRow)
    votes = db.execute(select(a.model, b.model, a.prompt, b.prompt, Vote.winner).join(a, Vote.image_a == a.id)
                       .join(b, Vote.image_b == b.id)
                       .where(a.model.is_not(None), b.model.is_not(None))).all()
    votes = [(ma, mb, w) for ma, mb, pa, pb, w in votes if same_prompt(pa) == same_prompt(pb)]
    ratings = db.execute(select(ImageRow.model, Rating.stars).join(ImageRow, Rating.image_id == ImageRow.id)
                         .where(ImageRow.model.is_not(None))).all()
    rows = standings([(ma, mb, OUTCOMES[w]) for ma, mb, w in votes if ma != mb], [(m, s) for m, s in ratings],
                     own_votes=[ma for ma, mb, _ in votes if ma == mb])
    return Leaderboard(models=[replace(r, score=round(r.score, 1),
                                       mean_stars=None if r.mean_stars is None else round(r.mean_stars, 3))
                               for r in rows])
