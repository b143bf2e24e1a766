// Builds the dashboard into the Python package, where `cove serve` serves it.
import { defineConfig } from 'vite'

export default defineConfig({
  base: '/dashboard/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: '../src/cove/web/static',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    chunkSizeWarningLimit: 800,
  },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:3000', ws: true }, '/toolbox': { target: 'http://127.0.0.1:3000', ws: true } } },
})
