// Copies Swagger UI's and ReDoc's files next to the dashboard: /docs and /redoc load
// them from the server itself, never from a CDN.
import { copyFileSync, mkdirSync } from 'node:fs'
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
console.log(`copied ${files.length} docs assets into ${out}`)
