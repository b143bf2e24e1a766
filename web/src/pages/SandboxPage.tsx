import { useState } from 'preact/hooks'
import type { Api, Sandbox } from '../api'
import { navigate } from '../router'
import { type Live, useSandbox } from '../live'
import { CodeRunner } from './CodeRunner'
import { ErrorLine, State, when } from './common'
import { Files } from './Files'
import { Actions } from './Sandboxes'
import { Terminal } from './Terminal'

const TABS = ['Terminal', 'Code', 'Files', 'Details'] as const

export function SandboxPage({ api, live, id }: { api: Api; live: Live; id: string }) {
  const { sandbox, error } = useSandbox(api, live, id)
  const [tab, setTab] = useState<(typeof TABS)[number]>('Terminal')
  const [actionError, setActionError] = useState<string | null>(null)
  if (error)
    return (
      <section>
        <h2><a href="/dashboard/sandboxes" class="muted">Sandboxes</a> / {id}</h2>
        <ErrorLine error={error} />
      </section>
    )
  if (!sandbox) return <p>Loading…</p>
  const act = async (s: Sandbox, action: string) => {
    setActionError(null)
    try {
      if (action === 'delete') {
        if (!confirm(`Delete sandbox ${s.name}? Its files are lost.`)) return
        await api.delete(`/api/sandbox/${s.id}`)
        navigate('/dashboard/sandboxes')
      } else await api.post(`/api/sandbox/${s.id}/${action}`)
    } catch (e) {
      setActionError(`${action}: ${(e as Error).message}`)
    }
  }
  const started = sandbox.state === 'started'
  return (
    <section class="sandbox" data-sandbox={sandbox.id}>
      <div class="section-head">
        <h2>
          <a href="/dashboard/sandboxes" class="muted">Sandboxes</a> / {sandbox.name} <State state={sandbox.state} />
        </h2>
        <div class="actions"><Actions sandbox={sandbox} act={act} /></div>
      </div>
      <ErrorLine error={actionError} />
      <div class="tabs" role="tablist">
        {TABS.map((t) => (
          <button role="tab" aria-selected={tab === t} class={tab === t ? 'active' : ''} onClick={() => setTab(t)}>{t}</button>
        ))}
      </div>
      <div class="tab-body">
        {tab === 'Details' ? (
          <Details sandbox={sandbox} />
        ) : !started ? (
          <p class="notice">The sandbox is {sandbox.state}: start it to use the {tab.toLowerCase()}.</p>
        ) : tab === 'Terminal' ? (
          <Terminal api={api} sandboxId={sandbox.id} />
        ) : tab === 'Code' ? (
          <CodeRunner api={api} sandboxId={sandbox.id} />
        ) : (
          <Files api={api} sandboxId={sandbox.id} />
        )}
      </div>
    </section>
  )
}

function Details({ sandbox }: { sandbox: Sandbox }) {
  const rows: [string, unknown][] = [
    ['Id', sandbox.id],
    ['Snapshot', sandbox.snapshot],
    ['User', sandbox.user],
    ['Resources', `${sandbox.cpu} CPU, ${sandbox.memory} GiB memory, ${sandbox.disk} GiB disk`],
    ['Labels', Object.entries(sandbox.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')],
    ['Created', when(sandbox.createdAt)],
    ['Updated', when(sandbox.updatedAt)],
    ['Error', sandbox.errorReason],
  ]
  return (
    <dl class="details">
      {rows.filter(([, v]) => v).map(([k, v]) => (<><dt>{k}</dt><dd class="mono">{String(v)}</dd></>))}
    </dl>
  )
}
