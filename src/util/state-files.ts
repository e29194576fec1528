/**
 * What this process last read from or wrote to its state files (mmlite.yaml, the journal).
 * Once a run holds the cluster lock it asks changedSinceRead(): if another run changed a file in
 * between, decisions made from the earlier read are stale and the run must start over.
 */
import {readFileSync} from 'node:fs'
import path from 'node:path'

const seen = new Map<string, string | null>()

/** Record a file's content as this process knows it (null: the file did not exist). */
export function noteState(file: string, content: string | null): void {
  seen.set(file, content)
}

function current(file: string): string | null {
  try {
    return readFileSync(file, 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw e
  }
}

/**
 * The first noted file of a configuration (the file itself and its `.mmlite/` state) whose
 * content is no longer what this process read or wrote, if any.
 */
export function changedSinceRead(configFile: string): string | undefined {
  const state = path.join(path.dirname(configFile), '.mmlite') + path.sep
  for (const [file, content] of seen) {
    if (file !== configFile && !file.startsWith(state)) continue
    if (current(file) !== content) return file
  }
  return undefined
}
