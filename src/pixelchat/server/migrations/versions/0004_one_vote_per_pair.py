"""A user's vote on a pair of pictures is one vote: the pair is stored in a fixed order (the smaller id
first, the winner flipped to match) and unique per user; of earlier repeated votes the newest stays.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the newest of a user's votes on a pair (either order) stays
    op.execute("""
        DELETE FROM votes WHERE id NOT IN (
            SELECT MAX(id) FROM votes
            GROUP BY user_id, CASE WHEN image_a < image_b THEN image_a ELSE image_b END,
                     CASE WHEN image_a < image_b THEN image_b ELSE image_a END)
    """)
    op.execute("""
        UPDATE votes SET image_a = image_b, image_b = image_a,
                         winner = CASE winner WHEN 'a' THEN 'b' WHEN 'b' THEN 'a' ELSE winner END
        WHERE image_a > image_b
    """)
    op.create_index("uq_votes_user_pair", "votes", ["user_id", "image_a", "image_b"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_votes_user_pair", table_name="votes")
