"""volumes on remote runners: where each volume's data is

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 23:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        # A runner's id, or the id of a volumes dir runners share; null: not mounted yet.
        batch_op.add_column(sa.Column('home', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_volumes_home', ['home'])
    # Every volume made before was in the API's data dir: the embedded runner's.
    op.execute("UPDATE volumes SET home = 'local'")


def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_index('ix_volumes_home')
        batch_op.drop_column('home')
