"""Browser logins, rooms and members, sessions, jobs, ratings and votes; images learn their model
and session.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def user_id(primary_key: bool = False) -> sa.Column:
    return sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
                     primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "logins",
        sa.Column("id", sa.Integer(), primary_key=True),
        user_id(),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        when("created"),
        when("expires"),
    )
    op.create_index("ix_logins_user_id", "logins", ["user_id"])
    op.create_index("ix_logins_token_hash", "logins", ["token_hash"], unique=True)
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        when("created"),
    )
    op.create_table(
        "room_members",
        sa.Column("room_id", sa.String(32), sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
        user_id(primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        when("added"),
    )
    op.create_index("ix_room_members_user_id", "room_members", ["user_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        user_id(),
        sa.Column("room_id", sa.String(32), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        when("created"),
        when("updated"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_room_id", "sessions", ["room_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        user_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(32), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=True),
        when("created"),
        when("started", nullable=True),
        when("finished", nullable=True),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_user_idempotency_key"),
    )
    op.create_index("ix_jobs_user_id", "jobs", ["user_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_session_id", "jobs", ["session_id"])
    op.create_table(
        "ratings",
        user_id(primary_key=True),
        sa.Column("image_id", sa.String(32), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stars", sa.Integer(), nullable=False),
        when("created"),
    )
    op.create_index("ix_ratings_image_id", "ratings", ["image_id"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        user_id(),
        sa.Column("image_a", sa.String(32), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_b", sa.String(32), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("winner", sa.String(4), nullable=False),
        when("created"),
    )
    for column in ("user_id", "image_a", "image_b"):
        op.create_index(f"ix_votes_{column}", "votes", [column])
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("model", sa.String(128), nullable=True))
        batch.add_column(sa.Column("session_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_images_session_id", "sessions", ["session_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_images_model", ["model"])
        batch.create_index("ix_images_session_id", ["session_id"])


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_session_id")
        batch.drop_index("ix_images_model")
        batch.drop_constraint("fk_images_session_id", type_="foreignkey")
        batch.drop_column("session_id")
        batch.drop_column("model")
    for table in ("votes", "ratings", "jobs", "sessions", "room_members", "rooms", "logins"):
        op.drop_table(table)
