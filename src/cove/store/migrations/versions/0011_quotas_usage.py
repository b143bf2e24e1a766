"""organization quotas and per-second usage periods

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('organization_quotas',
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=True),
    sa.Column('memory', sa.Integer(), nullable=True),
    sa.Column('disk', sa.Integer(), nullable=True),
    sa.Column('sandboxes', sa.Integer(), nullable=True),
    sa.Column('snapshots', sa.Integer(), nullable=True),
    sa.Column('snapshot_storage', sa.Integer(), nullable=True),
    sa.Column('volumes', sa.Integer(), nullable=True),
    sa.Column('max_cpu_per_sandbox', sa.Integer(), nullable=True),
    sa.Column('max_memory_per_sandbox', sa.Integer(), nullable=True),
    sa.Column('max_disk_per_sandbox', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organization_id')
    )
    op.create_table('usage_periods',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sandbox_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=False),
    sa.Column('memory', sa.Integer(), nullable=False),
    sa.Column('disk', sa.Integer(), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('usage_periods', schema=None) as batch_op:
        batch_op.create_index('ix_usage_periods_org_start', ['organization_id', 'start_at'])
        batch_op.create_index('ix_usage_periods_sandbox', ['sandbox_id', 'start_at'])
        batch_op.create_index('ix_usage_periods_open', ['end_at'])


def downgrade() -> None:
    with op.batch_alter_table('usage_periods', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_periods_open')
        batch_op.drop_index('ix_usage_periods_sandbox')
        batch_op.drop_index('ix_usage_periods_org_start')
    op.drop_table('usage_periods')
    op.drop_table('organization_quotas')
