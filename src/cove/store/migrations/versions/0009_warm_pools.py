"""warm pools: pool definitions, unclaimed sandboxes (no organization)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('warm_pools',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('snapshot', sa.String(length=255), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=False),
    sa.Column('memory', sa.Integer(), nullable=False),
    sa.Column('disk', sa.Integer(), nullable=False),
    sa.Column('isolation', sa.String(length=16), nullable=False),
    sa.Column('user', sa.String(length=64), nullable=False),
    sa.Column('error_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('warm_pools', schema=None) as batch_op:
        batch_op.create_index('ix_warm_pools_org_snapshot',
                              ['organization_id', 'snapshot', 'target'], unique=True)
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.alter_column('organization_id', existing_type=sa.String(length=64),
                              nullable=True)
        batch_op.add_column(sa.Column('warm_pool_id', sa.String(length=80), nullable=True))
        batch_op.create_index('ix_sandboxes_warm_pool_id', ['warm_pool_id'])


def downgrade() -> None:
    op.execute("DELETE FROM sandboxes WHERE organization_id IS NULL")
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index('ix_sandboxes_warm_pool_id')
        batch_op.drop_column('warm_pool_id')
        batch_op.alter_column('organization_id', existing_type=sa.String(length=64),
                              nullable=False)
    with op.batch_alter_table('warm_pools', schema=None) as batch_op:
        batch_op.drop_index('ix_warm_pools_org_snapshot')
    op.drop_table('warm_pools')
