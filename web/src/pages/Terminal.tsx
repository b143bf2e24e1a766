// A shell in the sandbox: xterm.js over the toolbox's PTY WebSocket (the SDK's protocol:
// binary frames both ways, JSON control frames from the server).
import { useEffect, useRef, useState } from 'preact/hooks'
import type { Api } from '../api'

export function Terminal({ api, sandboxId }: { api: Api; sandboxId: string }) {
  const box = useRef<HTMLDivElement>(null)
  const [status, setStatus] = useState('connecting…')
  useEffect(() => {
    let cleanup = () => {}
    let gone = false
    import('../xterm').then(({ Terminal: XTerm, FitAddon }) => {
      if (!gone) cleanup = attach(new XTerm({ cursorBlink: true, fontSize: 13, theme: { background: '#10141a' } }), new FitAddon())
    }, (e) => setStatus(`failed to load the terminal: ${e}`))
    return () => {
      gone = true
      cleanup()
    }
  }, [api, sandboxId])

  // Opens the terminal over the PTY WebSocket; returns what closes it all.
  function attach(term: import('@xterm/xterm').Terminal, fit: import('@xterm/addon-fit').FitAddon): () => void {
    term.loadAddon(fit)
    term.open(box.current!)
    fit.fit()
    const ptyId = `dashboard-${Math.random().toString(36).slice(2, 10)}`
    const base = api.toolbox(sandboxId, '/process/pty')
    const query = new URLSearchParams({ id: ptyId, cols: String(term.cols), rows: String(term.rows) })
    const socket = api.websocket(`${base}/create-connect?${query}`, ['X-Daytona-Pty-Exit-Control'])
    socket.onmessage = (event) => {
      if (typeof event.data === 'string') {
        try {
          const message = JSON.parse(event.data)
          if (message.type === 'control') {
            if (message.status === 'connected') setStatus('connected')
            else if (message.status === 'exited') setStatus(`exited (${message.exitCode})`)
            else if (message.status === 'error') setStatus(`error: ${message.error}`)
            return
          }
        } catch {
          // terminal output that is not a control frame
        }
        term.write(event.data)
      } else term.write(new Uint8Array(event.data as ArrayBuffer))
    }
    socket.onclose = (event) => setStatus((s) => (s.startsWith('exited') ? s : `closed${event.code === 1000 ? '' : ` (${event.code})`}`))
    const encoder = new TextEncoder()
    const input = term.onData((data) => socket.readyState === WebSocket.OPEN && socket.send(encoder.encode(data)))
    const resize = () => {
      fit.fit()
      if (socket.readyState === WebSocket.OPEN) api.post(`${base}/${ptyId}/resize`, { cols: term.cols, rows: term.rows }).catch(() => {})
    }
    addEventListener('resize', resize)
    term.focus()
    return () => {
      removeEventListener('resize', resize)
      input.dispose()
      socket.close()
      term.dispose()
      api.delete(`${base}/${ptyId}`).catch(() => {}) // the shell would outlive the page
    }
  }
  return (
    <div class="terminal">
      <div class="muted" data-testid="terminal-status">Terminal: {status}</div>
      <div class="xterm-frame"><div ref={box} class="xterm-box" data-testid="terminal" /></div>
    </div>
  )
}
