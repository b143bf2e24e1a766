// A small History API router: paths under /dashboard/.
import { useEffect, useState } from 'preact/hooks'

const listeners = new Set<() => void>()

export function navigate(path: string): void {
  history.pushState(null, '', path)
  listeners.forEach((listener) => listener())
}

export function usePath(): string {
  const [path, setPath] = useState(location.pathname)
  useEffect(() => {
    const update = () => setPath(location.pathname)
    listeners.add(update)
    addEventListener('popstate', update)
    return () => {
      listeners.delete(update)
      removeEventListener('popstate', update)
    }
  }, [])
  return path
}

// A click on an in-app link changes the page without a reload.
export function onLink(event: MouseEvent): void {
  const anchor = (event.target as HTMLElement).closest('a')
  if (!anchor || anchor.target || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return
  const href = anchor.getAttribute('href')
  if (href?.startsWith('/dashboard')) {
    event.preventDefault()
    navigate(href)
  }
}
