"""runners registry (several hosts) and each sandbox's runner

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:00:00
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    runners = op.create_table('runners',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('memory', sa.BigInteger(), nullable=False, server_default='0'),
    sa.Column('memory_free', sa.BigInteger(), nullable=False, server_default='0'),
    sa.Column('disk', sa.BigInteger(), nullable=False, server_default='0'),
    sa.Column('disk_free', sa.BigInteger(), nullable=False, server_default='0'),
    sa.Column('sandboxes', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('max_sandboxes', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('reachable', sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column('last_heartbeat', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    )
    # The embedded runner of ``cove serve`` (or the one COVE_RUNNER_URL names): every
    # sandbox made before several hosts existed is on it.
    op.bulk_insert(runners, [{'id': 'local', 'name': 'local', 'url': None, 'state': 'ready',
                              'created_at': datetime.now(UTC)}])
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner_id', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_sandboxes_runner_id', ['runner_id'])
    op.execute("UPDATE sandboxes SET runner_id = 'local'")


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index('ix_sandboxes_runner_id')
        batch_op.drop_column('runner_id')
    op.drop_table('runners')
