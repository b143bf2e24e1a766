"""ssh access tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ssh_access',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('sandbox_id', sa.String(length=64), nullable=False),
        sa.Column('organization_id', sa.String(length=64), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_index('ix_ssh_access_sandbox_id', 'ssh_access', ['sandbox_id'])


def downgrade() -> None:
    op.drop_index('ix_ssh_access_sandbox_id', table_name='ssh_access')
    op.drop_table('ssh_access')
