"""API replicas: leases (the once-only jobs' leader, each replica's liveness), the
sandboxes' URL signing keys, early-expired preview tokens, the fingerprints of the
secrets every replica must share

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 20:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


    op.create_table(
        "signing_keys",
        sa.Column("sandbox_id", sa.String(length=64), primary_key=True),
        sa.Column("sealed", sa.Text(), nullable=False),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("token_hash", sa.String(length=64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    op.create_table(
        "key_fingerprints",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_fingerprints")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_table("signing_keys")
    op.drop_table("leases")
