"""SSH access grants end with the API key that asked for them

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 07:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ssh_access', schema=None) as batch_op:
        # The key that asked for the grant; null: COVE_API_KEY's, or made before this.
        batch_op.add_column(sa.Column('key_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ssh_access', schema=None) as batch_op:
        batch_op.drop_column('key_id')
