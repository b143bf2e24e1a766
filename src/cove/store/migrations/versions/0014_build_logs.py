"""Build logs in the database, where every API replica reads them: one row per log
(who writes it, whether it is finished), its text in bounded chunks

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 23:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "build_logs",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("worker", sa.String(length=80), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "build_log_chunks",
        sa.Column("log_id", sa.String(length=80),
                  sa.ForeignKey("build_logs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("build_log_chunks")
    op.drop_table("build_logs")
