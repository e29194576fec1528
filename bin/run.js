#!/usr/bin/env node
// first: hide passwords given on the command line (process title, DEBUG output) and warn
import '../dist/util/secret-argv.js'
import {execute} from '@oclif/core'

// Deprecation notices are for developers of mmlite, not its users (e.g. node-postgres announces
// that its ~/.pgpass support moves out in pg@9 every time a password comes from PGPASSFILE).
process.noDeprecation = true
await execute({dir: import.meta.url})
