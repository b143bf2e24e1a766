import { render } from 'preact'
import { useEffect, useMemo, useState } from 'preact/hooks'
import './styles.css'
import { Api } from './api'
import { Live, useConnected } from './live'
import { onLink, usePath } from './router'
import { SignIn } from './pages/SignIn'
import { Sandboxes } from './pages/Sandboxes'
import { SandboxPage } from './pages/SandboxPage'
import { Snapshots } from './pages/Snapshots'
import { Volumes } from './pages/Volumes'
import { Keys } from './pages/Keys'
import { Usage } from './pages/Usage'

const NAV = [
  ['/dashboard/sandboxes', 'Sandboxes'],
  ['/dashboard/snapshots', 'Snapshots'],
  ['/dashboard/volumes', 'Volumes'],
  ['/dashboard/keys', 'API keys'],
  ['/dashboard/usage', 'Usage'],
]

// The key lives in this page's memory only, never in the browser's storage: a
// path-based preview (/preview/...) is served on this same origin, and what a sandbox
// serves there could read the tab's sessionStorage. A reload asks for it again.
function App() {
  const [key, setKey] = useState<string | null>(null)
  if (!key) return <SignIn onKey={setKey} />
  return <Signed apiKey={key} onSignOut={() => setKey(null)} />
}

function Signed({ apiKey, onSignOut }: { apiKey: string; onSignOut: () => void }) {
  const api = useMemo(() => new Api(apiKey, onSignOut), [apiKey])
  const live = useMemo(() => new Live(apiKey), [apiKey])
  useEffect(() => () => live.close(), [live])
  const connected = useConnected(live)
  const path = usePath()
  const section = path.replace(/^\/dashboard\/?/, '').split('/')
  let page
  if (section[0] === 'sandboxes' && section[1]) page = <SandboxPage api={api} live={live} id={decodeURIComponent(section[1])} />
  else if (section[0] === 'snapshots') page = <Snapshots api={api} />
  else if (section[0] === 'volumes') page = <Volumes api={api} />
  else if (section[0] === 'keys') page = <Keys api={api} />
  else if (section[0] === 'usage') page = <Usage api={api} />
  else page = <Sandboxes api={api} live={live} />
  const current = '/dashboard/' + (section[0] || 'sandboxes')
  return (
    <div class="shell" onClick={onLink}>
      <header>
        <a class="brand" href="/dashboard/sandboxes">Cove</a>
        <nav>
          {NAV.map(([href, label]) => (
            <a href={href} class={current === href ? 'active' : ''}>{label}</a>
          ))}
          <a href="/docs" target="_blank" rel="noreferrer">API docs</a>
        </nav>
        <span class={`live ${connected ? 'on' : 'off'}`} title="Socket.IO events">{connected ? 'live' : 'offline'}</span>
        <button class="link" onClick={onSignOut}>Sign out</button>
      </header>
      <main>{page}</main>
    </div>
  )
}

render(<App />, document.getElementById('app')!)
