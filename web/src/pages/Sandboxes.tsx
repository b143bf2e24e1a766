import { useEffect, useState } from 'preact/hooks'
import { type Api, matches, parseLabels, type Sandbox } from '../api'
import type { Live } from '../live'
import { ErrorLine, Section, State, when } from './common'

export function Sandboxes({ api, live }: { api: Api; live: Live }) {
  const [filter, setFilter] = useState('')
  const [labels, setLabels] = useState<Record<string, string>>({})
  const [sandboxes, setSandboxes] = useState<Sandbox[] | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [showCreate, setShowCreate] = useState(false)

  useEffect(() => {
    let gone = false
    const load = () =>
      api.sandboxes(labels).then(
        (list) => !gone && setSandboxes(list),
        (e) => !gone && setError(String(e.message)),
      )
    load()
    const off = live.subscribe((sandbox) =>
      setSandboxes((list) => {
        if (!list) return list
        const rest = list.filter((s) => s.id !== sandbox.id)
        const old = list.find((s) => s.id === sandbox.id)
        const ending = sandbox.state === 'destroying' || sandbox.state === 'destroyed'
        if (sandbox.state === 'destroyed' || (!old && (ending || !matches(sandbox, labels)))) return rest
        const merged = { ...old, ...sandbox }
        return old ? list.map((s) => (s.id === sandbox.id ? merged : s)) : [merged, ...list]
      }),
    )
    live.socket.on('connect', load) // events may have been missed while disconnected
    return () => {
      gone = true
      off()
      live.socket.off('connect', load)
    }
  }, [api, live, labels])

  const upsert = (sandbox: Sandbox) =>
    setSandboxes((list) => (list && !list.some((s) => s.id === sandbox.id) ? [sandbox, ...list] : list))

  const act = async (sandbox: Sandbox, action: string) => {
    setError(null)
    try {
      if (action === 'delete') {
        if (!confirm(`Delete sandbox ${sandbox.name}? Its files are lost.`)) return
        await api.delete(`/api/sandbox/${sandbox.id}`)
        setSandboxes((list) => list?.filter((s) => s.id !== sandbox.id) ?? list)
      } else {
        await api.post(`/api/sandbox/${sandbox.id}/${action}`)
      }
    } catch (e) {
      setError(`${action} ${sandbox.name}: ${(e as Error).message}`)
    }
  }

  return (
    <Section
      title="Sandboxes"
      actions={<button onClick={() => setShowCreate(!showCreate)}>{showCreate ? 'Close' : 'Create sandbox'}</button>}
    >
      {showCreate && <CreateSandbox api={api} onCreated={(created) => (setShowCreate(false), upsert(created))} onError={setError} />}
      <form class="filter" onSubmit={(e) => (e.preventDefault(), setLabels(parseLabels(filter)))}>
        <input name="labelFilter" placeholder="Filter by labels: key=value, key2=value2" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        <button type="submit">Filter</button>
        {Object.keys(labels).length > 0 && (
          <button type="button" class="link" onClick={() => (setFilter(''), setLabels({}))}>Clear</button>
        )}
      </form>
      <ErrorLine error={error} />
      {sandboxes === null ? (
        <p>Loading…</p>
      ) : sandboxes.length === 0 ? (
        <p class="empty">No sandboxes{Object.keys(labels).length ? ' with these labels' : ''}.</p>
      ) : (
        <table class="list">
          <thead>
            <tr><th>Name</th><th>State</th><th>Snapshot</th><th>Labels</th><th>Resources</th><th>Created</th><th></th></tr>
          </thead>
          <tbody>
            {sandboxes.map((s) => (
              <tr key={s.id} data-sandbox={s.id}>
                <td><a href={`/dashboard/sandboxes/${s.id}`}>{s.name}</a><div class="muted mono">{s.id.slice(0, 8)}</div></td>
                <td><State state={s.state} /></td>
                <td>{s.snapshot}</td>
                <td>{Object.entries(s.labels ?? {}).map(([k, v]) => <span class="label">{k}={v}</span>)}</td>
                <td class="muted">{s.cpu} CPU · {s.memory} GiB · {s.disk} GiB</td>
                <td class="muted">{when(s.createdAt)}</td>
                <td class="row-actions"><Actions sandbox={s} act={act} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  )
}

export function Actions({ sandbox, act }: { sandbox: Sandbox; act: (s: Sandbox, action: string) => void }) {
  const state = sandbox.state
  return (
    <>
      {(state === 'stopped' || state === 'archived' || state === 'paused') && <button onClick={() => act(sandbox, 'start')}>Start</button>}
      {state === 'started' && <button onClick={() => act(sandbox, 'stop')}>Stop</button>}
      {state === 'stopped' && <button onClick={() => act(sandbox, 'archive')}>Archive</button>}
      <button class="danger" onClick={() => act(sandbox, 'delete')}>Delete</button>
    </>
  )
}

function CreateSandbox({ api, onCreated, onError }: { api: Api; onCreated: (sandbox: Sandbox) => void; onError: (e: string | null) => void }) {
  const [snapshots, setSnapshots] = useState<{ name: string }[]>([])
  const [busy, setBusy] = useState(false)
  useEffect(() => {
    api.get<{ items: { name: string; state: string }[] }>('/api/snapshots?limit=100').then(
      (page) => setSnapshots(page.items.filter((s) => s.state === 'active')),
      () => setSnapshots([]),
    )
  }, [api])
  const submit = async (event: Event) => {
    event.preventDefault()
    const form = new FormData(event.currentTarget as HTMLFormElement)
    const body: Record<string, unknown> = { labels: parseLabels(String(form.get('labels') ?? '')) }
    for (const field of ['name', 'snapshot']) if (form.get(field)) body[field] = form.get(field)
    for (const field of ['cpu', 'memory', 'disk', 'autoStopInterval']) if (form.get(field)) body[field] = Number(form.get(field))
    setBusy(true)
    onError(null)
    try {
      onCreated(await api.post<Sandbox>('/api/sandbox', body))
    } catch (e) {
      onError(`create: ${(e as Error).message}`)
    } finally {
      setBusy(false)
    }
  }
  return (
    <form class="create card" onSubmit={submit}>
      <label>Name <input name="name" placeholder="(generated)" /></label>
      <label>
        Snapshot
        <select name="snapshot">
          <option value="">(default)</option>
          {snapshots.map((s) => <option value={s.name}>{s.name}</option>)}
        </select>
      </label>
      <label>Labels <input name="labels" placeholder="key=value, key2=value2" /></label>
      <label>CPU <input name="cpu" type="number" min="1" placeholder="1" /></label>
      <label>Memory GiB <input name="memory" type="number" min="1" placeholder="1" /></label>
      <label>Disk GiB <input name="disk" type="number" min="1" placeholder="3" /></label>
      <label>Auto-stop min <input name="autoStopInterval" type="number" min="0" placeholder="15" /></label>
      <button type="submit" disabled={busy}>{busy ? 'Creating…' : 'Create'}</button>
    </form>
  )
}
