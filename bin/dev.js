#!/usr/bin/env -S node --import tsx/esm --no-warnings
// Development entry point: runs the TypeScript sources (via tsx) and ignores
// oclif.manifest.json, which `npm run build` writes for the compiled bin/run.js.
import {Plugin, execute} from '@oclif/core'
import {fileURLToPath} from 'node:url'

process.env.NODE_ENV ??= 'development'
const root = fileURLToPath(new URL('..', import.meta.url))
const plugin = new Plugin({root, isRoot: true, ignoreManifest: true})
await plugin.load()
await execute({development: true, dir: import.meta.url, loadOptions: {root, plugins: new Map([[plugin.name, plugin]])}})
