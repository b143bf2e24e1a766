import type { Api } from '../api'
import { ErrorLine, Section, State, useLoad, when } from './common'

type Snapshot = { id: string; name: string; state: string; imageName?: string; size?: number | null; cpu: number; mem: number; disk: number; createdAt: string; general: boolean }

export function Snapshots({ api }: { api: Api }) {
  const [loaded, reload] = useLoad(() => api.get<{ items: Snapshot[]; total: number }>('/api/snapshots?limit=100'), [api])
  return (
    <Section title="Snapshots" actions={<button onClick={reload}>Refresh</button>}>
      <ErrorLine error={loaded.error ?? null} />
      {loaded.data && (
        loaded.data.items.length === 0 ? <p class="empty">No snapshots.</p> : (
          <table class="list">
            <thead><tr><th>Name</th><th>State</th><th>Image</th><th>Size</th><th>Resources</th><th>Created</th></tr></thead>
            <tbody>
              {loaded.data.items.map((s) => (
                <tr data-snapshot={s.name}>
                  <td>{s.name}{s.general && <span class="label">general</span>}</td>
                  <td><State state={s.state} /></td>
                  <td class="mono muted">{s.imageName}</td>
                  <td class="muted">{s.size ? `${s.size.toFixed(2)} GiB` : ''}</td>
                  <td class="muted">{s.cpu} CPU · {s.mem} GiB · {s.disk} GiB</td>
                  <td class="muted">{when(s.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
    </Section>
  )
}
