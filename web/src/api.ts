// The dashboard speaks only the public API, the one the SDKs use: /api for the control
// plane, /toolbox/{id} for what runs in a sandbox, with the key as a Bearer token.

export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message)
  }
}

export type Sandbox = {
  id: string
  name: string
  organizationId: string
  state?: string
  snapshot?: string
  labels: Record<string, string>
  cpu: number
  memory: number
  disk: number
  createdAt?: string
  updatedAt?: string
  errorReason?: string
  user: string
}

export type FileInfo = { name: string; isDir: boolean; size: number; modTime: string; permissions: string }

// A WebSocket subprotocol carrying the key: browsers cannot set headers on WebSockets.
export function bearerProtocol(key: string): string {
  const bytes = new TextEncoder().encode(key)
  let binary = ''
  for (const b of bytes) binary += String.fromCharCode(b)
  return 'cove.bearer.' + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

export class Api {
  // onUnauthorized: the key stopped working (revoked, expired): sign in again.
  constructor(readonly key: string, private onUnauthorized: () => void = () => {}) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}`, Accept: 'application/json' }
    let payload: BodyInit | undefined
    if (body instanceof FormData) payload = body
    else if (body !== undefined) {
      headers['Content-Type'] = 'application/json'
      payload = JSON.stringify(body)
    }
    const response = await fetch(path, { method, headers, body: payload })
    if (response.status === 401) this.onUnauthorized()
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response))
    if (response.status === 204) return undefined as T
    const text = await response.text()
    return (text ? JSON.parse(text) : undefined) as T
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path)
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body)
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path)
  }

  async blob(path: string): Promise<Blob> {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${this.key}` } })
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response))
    return response.blob()
  }

  // Every sandbox the filter matches, following nextCursor.
  async sandboxes(labels: Record<string, string>): Promise<Sandbox[]> {
    const all: Sandbox[] = []
    let cursor: string | null = null
    do {
      const query = new URLSearchParams({ limit: '200' })
      if (Object.keys(labels).length) query.set('labels', JSON.stringify(labels))
      if (cursor) query.set('cursor', cursor)
      const page: { items: Sandbox[]; nextCursor?: string | null } = await this.get(`/api/sandbox?${query}`)
      all.push(...page.items)
      cursor = page.nextCursor || null
    } while (cursor)
    return all
  }

  toolbox(id: string, path: string): string {
    return `/toolbox/${encodeURIComponent(id)}${path}`
  }

  websocket(path: string, protocols: string[] = []): WebSocket {
    const url = new URL(path, location.href)
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    const socket = new WebSocket(url, [...protocols, 'cove.dashboard', bearerProtocol(this.key)])
    socket.binaryType = 'arraybuffer'
    return socket
  }
}

async function errorMessage(response: Response): Promise<string> {
  const text = await response.text()
  try {
    const body = JSON.parse(text)
    const message = body.message ?? body.detail
    if (message) return Array.isArray(message) ? message.join(', ') : String(message)
  } catch {
    // not the error envelope
  }
  return text.slice(0, 300) || `${response.status} ${response.statusText}`
}

// "k=v, k2=v2" -> {k: v, k2: v2}
export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const part of text.split(',')) {
    const [key, ...rest] = part.split('=')
    if (key.trim()) labels[key.trim()] = rest.join('=').trim()
  }
  return labels
}

export function matches(sandbox: Sandbox, labels: Record<string, string>): boolean {
  return Object.entries(labels).every(([k, v]) => sandbox.labels?.[k] === v)
}
