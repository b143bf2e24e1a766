// Copies Swagger UI's and ReDoc's files next to the dashboard: /docs and /redoc load
// them from the server itself, never from a CDN.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const require = createRequire(import.meta.url)
const out = new URL('../../src/cove/web/static/docs/', import.meta.url).pathname
const swagger = dirname(require.resolve('swagger-ui-dist/package.json'))
const redoc = dirname(require.resolve('redoc/package.json'))
const files = [
  [join(swagger, 'swagger-ui-bundle.js'), 'swagger-ui-bundle.js'],
  [join(swagger, 'swagger-ui.css'), 'swagger-ui.css'],
  [join(swagger, 'favicon-32x32.png'), 'favicon.png'],
  [join(redoc, 'bundles', 'redoc.standalone.js'), 'redoc.standalone.js'],
]
mkdirSync(out, { recursive: true })
for (const [from, to] of files) copyFileSync(from, join(out, to))
// ReDoc's "API docs by Redocly" footer shows a logo from Redocly's CDN: the page's
// Content-Security-Policy would block it (an error in the console), so it is left out.
const redocFile = join(out, 'redoc.standalone.js')
const logo = 'https://cdn.redoc.ly/redoc/logo-mini.svg'
const bundle = readFileSync(redocFile, 'utf8')
if (bundle.includes(logo)) writeFileSync(redocFile, bundle.replaceAll(logo, 'data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22/%3E'))
else console.warn(`ReDoc no longer names ${logo}: check its page for external assets`)
console.log(`copied ${files.length} docs assets into ${out}`)
