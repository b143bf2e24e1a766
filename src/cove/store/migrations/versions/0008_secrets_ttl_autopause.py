"""secrets, sandbox secret mounts, TTL and auto-pause

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('secrets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('hosts', sa.JSON(), nullable=False),
    sa.Column('placeholder', sa.String(length=128), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('secrets', schema=None) as batch_op:
        batch_op.create_index('ix_secrets_org_name', ['organization_id', 'name'], unique=True)
    op.create_table('sandbox_secrets',
    sa.Column('sandbox_id', sa.String(length=64), nullable=False),
    sa.Column('env_name', sa.String(length=256), nullable=False),
    sa.Column('secret_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['sandbox_id'], ['sandboxes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['secret_id'], ['secrets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sandbox_id', 'env_name')
    )
    with op.batch_alter_table('sandbox_secrets', schema=None) as batch_op:
        batch_op.create_index('ix_sandbox_secrets_secret', ['secret_id'], unique=False)
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_pause_interval', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('auto_destroy_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index('ix_sandboxes_auto_destroy_at', ['auto_destroy_at'])


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index('ix_sandboxes_auto_destroy_at')
        batch_op.drop_column('auto_destroy_at')
        batch_op.drop_column('auto_pause_interval')
    with op.batch_alter_table('sandbox_secrets', schema=None) as batch_op:
        batch_op.drop_index('ix_sandbox_secrets_secret')
    op.drop_table('sandbox_secrets')
    with op.batch_alter_table('secrets', schema=None) as batch_op:
        batch_op.drop_index('ix_secrets_org_name')
    op.drop_table('secrets')
