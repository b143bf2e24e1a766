// API keys, in Daytona's shapes (ApiKeyList, CreateApiKey, ApiKeyResponse).
import { useState } from 'preact/hooks'
import type { Api } from '../api'
import { ErrorLine, NotAvailable, Section, useLoad, when } from './common'

type ApiKey = { name: string; value: string; createdAt: string; permissions: string[]; lastUsedAt?: string | null; expiresAt?: string | null }

const PERMISSIONS = ['write:sandboxes', 'delete:sandboxes', 'write:snapshots', 'delete:snapshots', 'read:volumes', 'write:volumes', 'delete:volumes', 'write:registries', 'delete:registries']

export function Keys({ api }: { api: Api }) {
  const [loaded, reload] = useLoad(() => api.get<ApiKey[]>('/api/api-keys'), [api])
  const [created, setCreated] = useState<ApiKey | null>(null)
  const [error, setError] = useState<string | null>(null)
  if (loaded.missing) return <Section title="API keys"><NotAvailable what="This server has no API key routes (/api/api-keys): use cove keys on its host." /></Section>

  const create = async (event: Event) => {
    event.preventDefault()
    const element = event.currentTarget as HTMLFormElement
    const form = new FormData(element)
    const days = Number(form.get('days') || 0)
    const body = {
      name: String(form.get('name')),
      permissions: form.getAll('permissions').map(String),
      expiresAt: days > 0 ? new Date(Date.now() + days * 86400_000).toISOString() : undefined,
    }
    setError(null)
    try {
      setCreated(await api.post<ApiKey>('/api/api-keys', body))
      element.reset()
      reload()
    } catch (e) {
      setError(`create: ${(e as Error).message}`)
    }
  }
  const revoke = async (key: ApiKey) => {
    if (!confirm(`Revoke key ${key.name}? Clients using it stop working.`)) return
    try {
      await api.delete(`/api/api-keys/${encodeURIComponent(key.name)}`)
      reload()
    } catch (e) {
      setError(`revoke ${key.name}: ${(e as Error).message}`)
    }
  }
  return (
    <Section title="API keys" actions={<button onClick={reload}>Refresh</button>}>
      <form class="create card" onSubmit={create}>
        <label>Name <input name="name" required /></label>
        <label>Expires in days <input name="days" type="number" min="0" placeholder="never" /></label>
        <fieldset>
          <legend>Permissions</legend>
          {PERMISSIONS.map((p) => <label class="check"><input type="checkbox" name="permissions" value={p} checked />{p}</label>)}
        </fieldset>
        <button type="submit">Create key</button>
      </form>
      {created && (
        <div class="notice" data-testid="new-key">
          Key <strong>{created.name}</strong> (shown once): <code class="mono">{created.value}</code>
          <pre class="mono">export DAYTONA_API_KEY={created.value}</pre>
        </div>
      )}
      <ErrorLine error={error ?? loaded.error ?? null} />
      {loaded.data && (
        <table class="list">
          <thead><tr><th>Name</th><th>Key</th><th>Permissions</th><th>Created</th><th>Last used</th><th>Expires</th><th></th></tr></thead>
          <tbody>
            {loaded.data.map((k) => (
              <tr data-key={k.name}>
                <td>{k.name}</td>
                <td class="mono muted">{k.value}</td>
                <td>{k.permissions.map((p) => <span class="label">{p}</span>)}</td>
                <td class="muted">{when(k.createdAt)}</td>
                <td class="muted">{when(k.lastUsedAt) || 'never'}</td>
                <td class="muted">{when(k.expiresAt) || 'never'}</td>
                <td class="row-actions"><button class="danger" onClick={() => revoke(k)}>Revoke</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  )
}
