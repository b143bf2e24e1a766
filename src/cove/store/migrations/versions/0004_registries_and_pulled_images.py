"""docker registries and pulled images

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('docker_registries',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('username', sa.Text(), nullable=False),
    sa.Column('password', sa.Text(), nullable=False),
    sa.Column('project', sa.Text(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('docker_registries', schema=None) as batch_op:
        batch_op.create_index('ix_docker_registries_org', ['organization_id'], unique=False)
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('image_config', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_column('image_config')
        batch_op.drop_column('digest')
    with op.batch_alter_table('docker_registries', schema=None) as batch_op:
        batch_op.drop_index('ix_docker_registries_org')
    op.drop_table('docker_registries')
