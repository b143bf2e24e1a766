// Python in the sandbox's stateful interpreter, its output shown as it comes: the
// toolbox's interpreter WebSocket (one JSON request, then stdout/stderr/error frames;
// the server closes it when the run ends).
import { useEffect, useRef, useState } from 'preact/hooks'
import type { Api } from '../api'

type Chunk = { stream: 'stdout' | 'stderr' | 'error'; text: string }

const EXAMPLE = `import time
for i in range(5):
    print(f"line {i}", flush=True)
    time.sleep(0.5)`

export function CodeRunner({ api, sandboxId }: { api: Api; sandboxId: string }) {
  const [code, setCode] = useState(EXAMPLE)
  const [chunks, setChunks] = useState<Chunk[]>([])
  const [status, setStatus] = useState('idle')
  const socket = useRef<WebSocket | null>(null)
  useEffect(() => () => socket.current?.close(), [])

  const run = () => {
    setChunks([])
    setStatus('running')
    const ws = api.websocket(api.toolbox(sandboxId, '/process/interpreter/execute'))
    socket.current = ws
    const decoder = new TextDecoder()
    ws.onopen = () => ws.send(JSON.stringify({ code }))
    ws.onmessage = (event) => {
      const text = typeof event.data === 'string' ? event.data : decoder.decode(event.data as ArrayBuffer)
      const frame = JSON.parse(text)
      if (frame.type === 'stdout' || frame.type === 'stderr') setChunks((c) => [...c, { stream: frame.type, text: frame.text }])
      else if (frame.type === 'error') setChunks((c) => [...c, { stream: 'error', text: `${frame.name}: ${frame.value}\n${frame.traceback ?? ''}` }])
    }
    ws.onclose = (event) => {
      socket.current = null
      setStatus(event.code === 1000 || event.code === 1005 ? 'finished' : event.code === 4008 ? 'timed out' : `failed: ${event.reason || event.code}`)
    }
  }
  const running = status === 'running'
  return (
    <div class="code">
      <textarea name="code" spellcheck={false} value={code} onInput={(e) => setCode(e.currentTarget.value)} rows={10} />
      <div class="toolbar">
        <button onClick={run} disabled={running}>Run</button>
        {running && <button onClick={() => socket.current?.close()}>Detach</button>}
        <span class="muted" data-testid="run-status">Python · {status}</span>
      </div>
      <pre class="output" data-testid="output">
        {chunks.map((c) => <span class={c.stream}>{c.text}</span>)}
      </pre>
    </div>
  )
}
