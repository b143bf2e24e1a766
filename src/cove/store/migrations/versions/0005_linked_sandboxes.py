"""linked sandboxes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('linked_sandbox_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('linked_sandbox_name', sa.String(length=255),
                                      nullable=True))
        batch_op.create_index('ix_sandboxes_linked_sandbox_id', ['linked_sandbox_id'])


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index('ix_sandboxes_linked_sandbox_id')
        batch_op.drop_column('linked_sandbox_name')
        batch_op.drop_column('linked_sandbox_id')
