"""sandbox isolation tier

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 02:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('isolation', sa.String(length=16), nullable=False,
                                      server_default='crun'))


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('isolation')
