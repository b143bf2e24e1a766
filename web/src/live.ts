// Sandboxes with live state: one list request, then the server's Socket.IO events (the
// ones the SDK gets) keep it current. Nothing is polled.
import { io, type Socket } from 'socket.io-client'
import { useEffect, useState } from 'preact/hooks'
import type { Api, Sandbox } from './api'

type Listener = (sandbox: Sandbox) => void

export class Live {
  readonly socket: Socket
  private listeners = new Set<Listener>()
  connected = false

  constructor(key: string) {
    this.socket = io({ path: '/api/socket.io', auth: { token: key }, transports: ['websocket'] })
    const update = (data: { sandbox?: Sandbox } & Sandbox) => {
      const sandbox = data.sandbox ?? data
      if (sandbox?.id) this.listeners.forEach((listener) => listener(sandbox))
    }
    this.socket.on('sandbox.created', update)
    this.socket.on('sandbox.state.updated', update)
    this.socket.on('connect', () => (this.connected = true))
    this.socket.on('disconnect', () => (this.connected = false))
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  close(): void {
    this.socket.close()
  }
}

export function useConnected(live: Live): boolean {
  const [connected, setConnected] = useState(live.socket.connected)
  useEffect(() => {
    const on = () => setConnected(true)
    const off = () => setConnected(false)
    live.socket.on('connect', on)
    live.socket.on('disconnect', off)
    setConnected(live.socket.connected)
    return () => {
      live.socket.off('connect', on)
      live.socket.off('disconnect', off)
    }
  }, [live])
  return connected
}

// One sandbox, refreshed by events.
export function useSandbox(api: Api, live: Live, id: string) {
  const [sandbox, setSandbox] = useState<Sandbox | null>(null)
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    let gone = false
    api.get<Sandbox>(`/api/sandbox/${encodeURIComponent(id)}`).then(
      (s) => !gone && setSandbox(s),
      (e) => !gone && setError(String(e.message)),
    )
    const off = live.subscribe((s) => {
      if (s.id === id) setSandbox((old) => ({ ...old, ...s }))
    })
    return () => {
      gone = true
      off()
    }
  }, [api, live, id])
  return { sandbox, error, setSandbox }
}
