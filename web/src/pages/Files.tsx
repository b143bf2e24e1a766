// The sandbox's files through the toolbox's file routes: list, download, upload, delete.
import { useEffect, useState } from 'preact/hooks'
import type { Api, FileInfo } from '../api'
import { bytes, ErrorLine, when } from './common'

export function Files({ api, sandboxId }: { api: Api; sandboxId: string }) {
  const [path, setPath] = useState<string | null>(null)
  const [files, setFiles] = useState<FileInfo[] | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [tick, setTick] = useState(0)
  const url = (p: string, q: Record<string, string> = {}) => api.toolbox(sandboxId, p) + '?' + new URLSearchParams(q)

  useEffect(() => {
    api.get<{ dir: string }>(api.toolbox(sandboxId, '/user-home-dir')).then((home) => setPath(home.dir), () => setPath('/'))
  }, [api, sandboxId])
  useEffect(() => {
    if (path === null) return
    setFiles(null)
    setError(null)
    api.get<FileInfo[]>(url('/files', { path })).then(
      (list) => setFiles(list.sort((a, b) => Number(b.isDir) - Number(a.isDir) || a.name.localeCompare(b.name))),
      (e) => setError(String(e.message)),
    )
  }, [api, sandboxId, path, tick])

  const join = (name: string) => (path === '/' ? '' : path) + '/' + name
  const download = async (file: FileInfo) => {
    try {
      const blob = await api.blob(url('/files/download', { path: join(file.name) }))
      const link = document.createElement('a')
      link.href = URL.createObjectURL(blob)
      link.download = file.name
      link.click()
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000)
    } catch (e) {
      setError(`download ${file.name}: ${(e as Error).message}`)
    }
  }
  const upload = async (input: HTMLInputElement) => {
    const form = new FormData()
    Array.from(input.files ?? []).forEach((file, i) => {
      form.append(`files[${i}].path`, join(file.name))
      form.append(`files[${i}].file`, file, join(file.name))
    })
    try {
      await api.post(api.toolbox(sandboxId, '/files/bulk-upload'), form)
      setTick((t) => t + 1)
    } catch (e) {
      setError(`upload: ${(e as Error).message}`)
    }
    input.value = ''
  }
  const remove = async (file: FileInfo) => {
    if (!confirm(`Delete ${join(file.name)}?`)) return
    try {
      await api.delete(url('/files', { path: join(file.name), recursive: String(file.isDir) }))
      setTick((t) => t + 1)
    } catch (e) {
      setError(`delete ${file.name}: ${(e as Error).message}`)
    }
  }
  if (path === null) return <p>Loading…</p>
  const parts = path.split('/').filter(Boolean)
  return (
    <div class="files">
      <div class="toolbar">
        <nav class="crumbs" data-testid="path">
          <button class="link" onClick={() => setPath('/')}>/</button>
          {parts.map((part, i) => (
            <>
              <button class="link" onClick={() => setPath('/' + parts.slice(0, i + 1).join('/'))}>{part}</button>/
            </>
          ))}
        </nav>
        <button onClick={() => setTick((t) => t + 1)}>Refresh</button>
        <label class="button">
          Upload <input type="file" name="upload" multiple hidden onChange={(e) => upload(e.currentTarget)} />
        </label>
      </div>
      <ErrorLine error={error} />
      {files === null ? (
        <p>Loading…</p>
      ) : (
        <table class="list">
          <thead><tr><th>Name</th><th>Size</th><th>Permissions</th><th>Modified</th><th></th></tr></thead>
          <tbody>
            {parts.length > 0 && (
              <tr><td colSpan={5}><button class="link" onClick={() => setPath('/' + parts.slice(0, -1).join('/'))}>..</button></td></tr>
            )}
            {files.map((f) => (
              <tr data-file={f.name}>
                <td>
                  {f.isDir ? <button class="link dir" onClick={() => setPath(join(f.name))}>{f.name}/</button> : <span class="mono">{f.name}</span>}
                </td>
                <td class="muted">{f.isDir ? '' : bytes(f.size)}</td>
                <td class="mono muted">{f.permissions}</td>
                <td class="muted">{when(f.modTime)}</td>
                <td class="row-actions">
                  {!f.isDir && <button onClick={() => download(f)}>Download</button>}
                  <button class="danger" onClick={() => remove(f)}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
}
