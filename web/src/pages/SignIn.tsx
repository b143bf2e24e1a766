import { useState } from 'preact/hooks'
import { Api } from '../api'

export function SignIn({ onKey }: { onKey: (key: string) => void }) {
  const [key, setKey] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const submit = async (event: Event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await new Api(key.trim()).get('/api/sandbox?limit=1')
      onKey(key.trim())
    } catch (e) {
      setError((e as Error).message)
    } finally {
      setBusy(false)
    }
  }
  return (
    <form class="signin" onSubmit={submit}>
      <h1>Cove</h1>
      <p>Sign in with an API key (the <code>DAYTONA_API_KEY</code> that <code>cove serve</code> printed, or one from <code>cove keys create</code>). It is kept in this page's memory only: a reload asks for it again.</p>
      <label>
        API key
        <input type="password" name="apiKey" autocomplete="off" value={key} onInput={(e) => setKey(e.currentTarget.value)} autofocus />
      </label>
      <button type="submit" disabled={busy || !key.trim()}>Sign in</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  )
}
