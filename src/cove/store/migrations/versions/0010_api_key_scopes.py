"""api keys: permissions, expiry, last use (reserved; filled by the keys work)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('permissions', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('masked', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('created_by')
        batch_op.drop_column('masked')
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('permissions')
