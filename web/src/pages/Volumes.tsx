import { useState } from 'preact/hooks'
import type { Api } from '../api'
import { ErrorLine, Section, State, useLoad, when } from './common'

type Volume = { id: string; name: string; state: string; createdAt: string; lastUsedAt?: string | null; errorReason?: string | null }

export function Volumes({ api }: { api: Api }) {
  const [loaded, reload] = useLoad(() => api.get<Volume[]>('/api/volumes'), [api])
  const [name, setName] = useState('')
  const [error, setError] = useState<string | null>(null)
  const create = async (event: Event) => {
    event.preventDefault()
    setError(null)
    try {
      await api.post('/api/volumes', { name: name.trim() })
      setName('')
      reload()
    } catch (e) {
      setError(`create: ${(e as Error).message}`)
    }
  }
  const remove = async (volume: Volume) => {
    if (!confirm(`Delete volume ${volume.name}? Its files are lost.`)) return
    try {
      await api.delete(`/api/volumes/${volume.id}`)
      reload()
    } catch (e) {
      setError(`delete ${volume.name}: ${(e as Error).message}`)
    }
  }
  return (
    <Section title="Volumes" actions={<button onClick={reload}>Refresh</button>}>
      <form class="filter" onSubmit={create}>
        <input name="volumeName" placeholder="New volume name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <button type="submit" disabled={!name.trim()}>Create volume</button>
      </form>
      <ErrorLine error={error ?? loaded.error ?? null} />
      {loaded.data && (
        loaded.data.length === 0 ? <p class="empty">No volumes.</p> : (
          <table class="list">
            <thead><tr><th>Name</th><th>State</th><th>Created</th><th>Last used</th><th></th></tr></thead>
            <tbody>
              {loaded.data.map((v) => (
                <tr data-volume={v.name}>
                  <td>{v.name}<div class="muted mono">{v.id.slice(0, 8)}</div></td>
                  <td><State state={v.state} />{v.errorReason && <span class="error"> {v.errorReason}</span>}</td>
                  <td class="muted">{when(v.createdAt)}</td>
                  <td class="muted">{when(v.lastUsedAt)}</td>
                  <td class="row-actions"><button class="danger" onClick={() => remove(v)}>Delete</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
    </Section>
  )
}
