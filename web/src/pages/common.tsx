import type { ComponentChildren } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { ApiError } from '../api'

export function State({ state }: { state?: string }) {
  return <span class={`state state-${state ?? 'unknown'}`} data-state={state}>{state ?? '?'}</span>
}

export function ErrorLine({ error }: { error: string | null }) {
  return error ? <p class="error" role="alert">{error}</p> : null
}

export function when(iso?: string | null): string {
  if (!iso) return ''
  const date = new Date(iso)
  return isNaN(date.getTime()) ? iso : date.toLocaleString()
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++
  return `${i ? n.toFixed(1) : n} ${units[i]}`
}

// A route this server may not have (yet): a 404 shows as "not available".
export type Loaded<T> = { data?: T; error?: string; missing?: boolean }

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): [Loaded<T>, () => void] {
  const [state, setState] = useState<Loaded<T>>({})
  const [tick, setTick] = useState(0)
  useEffect(() => {
    let gone = false
    load().then(
      (data) => !gone && setState({ data }),
      (e) => !gone && setState(e instanceof ApiError && e.status === 404 ? { missing: true } : { error: String(e.message) }),
    )
    return () => {
      gone = true
    }
  }, [...deps, tick])
  return [state, () => setTick((t) => t + 1)]
}

export function NotAvailable({ what }: { what: string }) {
  return (
    <div class="notice" data-testid="not-available">
      <strong>Not available on this server.</strong> {what}
    </div>
  )
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section>
      <div class="section-head">
        <h2>{title}</h2>
        <div class="actions">{actions}</div>
      </div>
      {children}
    </section>
  )
}
