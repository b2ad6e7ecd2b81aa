"""Alembic environment: the URL comes from the config `pixelchat.server.db` builds."""

from alembic import context

from pixelchat.server.db import get_engine
from pixelchat.server.models import Base

config = context.config
engine = get_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
