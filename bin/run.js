#!/usr/bin/env node
// first: hide passwords given on the command line (process title, DEBUG output) and warn
import '../dist/util/secret-argv.js'
import {execute} from '@oclif/core'

await execute({dir: import.meta.url})
