/**
 * Loaded first by bin/run.js. A password given on the command line (`--dsn
 * postgresql://u:pw@...`) is visible to other local users in the process list and lands in
 * shell history and in oclif's `DEBUG=*` output. We cannot take it back from the shell, but:
 *  - the process title is replaced by the redacted command line (`ps` shows ******** from now on),
 *  - with DEBUG set, everything written to stderr goes through redactText (oclif logs argv),
 *  - a warning names the password-free ways: PGPASSWORD, ~/.pgpass, ${VAR} in mmlite.yaml.
 */
import {redactText} from '../db/redact.js'

export function protectSecrets(argv: string[] = process.argv, env: NodeJS.ProcessEnv = process.env): {warned: boolean} {
  if (env.DEBUG) {
    const write = process.stderr.write.bind(process.stderr) as (chunk: unknown, ...rest: unknown[]) => boolean
    process.stderr.write = ((chunk: unknown, ...rest: unknown[]) =>
      write(typeof chunk === 'string' ? redactText(chunk) : Buffer.isBuffer(chunk) ? redactText(chunk.toString('utf8')) : chunk, ...rest)) as typeof process.stderr.write
  }
  const args = argv.slice(2)
  if (!args.some(a => redactText(a) !== a)) return {warned: false}
  try {
    process.title = ['mmlite', ...args.map(redactText)].join(' ')
  } catch {
    /* not supported here */
  }
  process.stderr.write(
    'warning: a password was given on the command line: other local users can see it in the process list, and your shell keeps it in its history.\n' +
      '  Leave it out of --dsn and use PGPASSWORD, ~/.pgpass (PGPASSFILE), or a ${VAR} in mmlite.yaml instead.\n',
  )
  return {warned: true}
}

protectSecrets()
