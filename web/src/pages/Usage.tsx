// Quotas and metered use, in Daytona's shapes: OrganizationUsageOverview from
// /api/organizations/{id}/usage, and the analytics API's AggregatedUsage from
// {analyticsApiUrl or /api}/organization/{id}/usage/aggregated.
import { useState } from 'preact/hooks'
import { type Api, ApiError, type Sandbox } from '../api'
import { ErrorLine, NotAvailable, Section, useLoad } from './common'

type Region = { regionId: string; totalCpuQuota: number; currentCpuUsage: number; totalMemoryQuota: number; currentMemoryUsage: number; totalDiskQuota: number; currentDiskUsage: number }
type Overview = { regionUsage: Region[]; totalSnapshotQuota: number; currentSnapshotUsage: number; totalVolumeQuota: number; currentVolumeUsage: number }

// Cove answers 0 for a quota the operator has not set (COVE_QUOTA_* unset): no limit.
const limit = (n: number) => (n > 0 ? n : 'no limit')
type Aggregated = { sandboxCount?: number; totalCPUSeconds?: number; totalRAMGBSeconds?: number; totalDiskGBSeconds?: number; totalPrice?: number; firstStart?: string; lastEnd?: string }

// The key's organization: Daytona's list, else what its sandboxes say (null: unknown).
async function organizationId(api: Api): Promise<string | null> {
  try {
    const orgs = await api.get<{ id: string }[]>('/api/organizations')
    if (orgs.length) return orgs[0].id
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e
  }
  const page = await api.get<{ items: Sandbox[] }>('/api/sandbox?limit=1')
  return page.items.length ? page.items[0].organizationId : null
}

const UNKNOWN = () => Promise.reject(new ApiError(404, 'no organization'))

async function analyticsBase(api: Api): Promise<string> {
  const config = await api.get<{ analyticsApiUrl?: string | null }>('/api/config')
  return config.analyticsApiUrl ? new URL(config.analyticsApiUrl, location.href).pathname.replace(/\/$/, '') : '/api'
}

export function Usage({ api }: { api: Api }) {
  const [days, setDays] = useState(30)
  const [org] = useLoad(() => organizationId(api), [api])
  const [overview] = useLoad(() => (org.data ? api.get<Overview>(`/api/organizations/${org.data}/usage`) : org.data === null ? UNKNOWN() : Promise.resolve(null)), [api, org.data])
  const [aggregated] = useLoad(async () => {
    if (org.data === null) return UNKNOWN()
    if (!org.data) return null
    const to = new Date()
    const from = new Date(to.getTime() - days * 86400_000)
    const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() })
    return api.get<Aggregated>(`${await analyticsBase(api)}/organization/${org.data}/usage/aggregated?${query}`)
  }, [api, org.data, days])
  return (
    <Section title="Usage">
      <ErrorLine error={org.error ?? null} />
      <h3>Quotas</h3>
      {overview.missing ? <NotAvailable what="This server reports no quotas (/api/organizations/{id}/usage)." /> : <ErrorLine error={overview.error ?? null} />}
      {overview.data && (
        <table class="list" data-testid="quotas">
          <thead><tr><th>Resource</th><th>In use</th><th>Quota</th></tr></thead>
          <tbody>
            {overview.data.regionUsage.map((r) => (
              <>
                <tr><td>CPU ({r.regionId})</td><td>{r.currentCpuUsage}</td><td>{limit(r.totalCpuQuota)}</td></tr>
                <tr><td>Memory GiB</td><td>{r.currentMemoryUsage}</td><td>{limit(r.totalMemoryQuota)}</td></tr>
                <tr><td>Disk GiB</td><td>{r.currentDiskUsage}</td><td>{limit(r.totalDiskQuota)}</td></tr>
              </>
            ))}
            <tr><td>Snapshots</td><td>{overview.data.currentSnapshotUsage}</td><td>{limit(overview.data.totalSnapshotQuota)}</td></tr>
            <tr><td>Volumes</td><td>{overview.data.currentVolumeUsage}</td><td>{limit(overview.data.totalVolumeQuota)}</td></tr>
          </tbody>
        </table>
      )}
      <h3>
        Metered use, last{' '}
        <select name="days" value={days} onChange={(e) => setDays(Number(e.currentTarget.value))}>
          {[1, 7, 30, 90].map((d) => <option value={d}>{d} days</option>)}
        </select>
      </h3>
      {aggregated.missing ? <NotAvailable what="This server meters no usage (…/organization/{id}/usage/aggregated)." /> : <ErrorLine error={aggregated.error ?? null} />}
      {aggregated.data && (
        <dl class="details" data-testid="aggregated">
          <dt>Sandboxes</dt><dd>{aggregated.data.sandboxCount ?? 0}</dd>
          <dt>CPU</dt><dd>{hours(aggregated.data.totalCPUSeconds)} vCPU·h</dd>
          <dt>Memory</dt><dd>{hours(aggregated.data.totalRAMGBSeconds)} GiB·h</dd>
          <dt>Disk</dt><dd>{hours(aggregated.data.totalDiskGBSeconds)} GiB·h</dd>
          <dt>Price</dt><dd>${(aggregated.data.totalPrice ?? 0).toFixed(4)}</dd>
        </dl>
      )}
    </Section>
  )
}

function hours(seconds?: number): string {
  return ((seconds ?? 0) / 3600).toFixed(3)
}
