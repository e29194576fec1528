/**
 * Files only the operator may read: mmlite's state and audit files (`.mmlite/`: the journal,
 * history.jsonl, skip-tx audit records holding whole rows and re-apply SQL) and mmlite.yaml.
 *
 *  - directories are created 0700 (and tightened to 0700 when they already exist and we own them),
 *  - files are created 0600,
 *  - the atomic-write temp file is created exclusively (O_EXCL) and never through a symbolic link
 *    (O_NOFOLLOW), so a link planted in the directory cannot redirect the write,
 *  - appends refuse to follow a symbolic link and create the file 0600.
 *
 * Every file read or written here is also noted (util/state-files.ts) so a run can tell, once it
 * holds the cluster lock, whether another run changed it since this process read it.
 */
import {constants} from 'node:fs'
import {chmod, lstat, mkdir, open, rename, unlink} from 'node:fs/promises'
import path from 'node:path'
import {noteState} from './state-files.js'

export const DIR_MODE = 0o700
export const FILE_MODE = 0o600

/** mkdir -p with mode 0700; an existing directory we own is tightened to 0700 (never through a link). */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, {recursive: true, mode: DIR_MODE})
  // the directory itself, and its parents up to the `.mmlite` state directory when inside one
  const parts = path.resolve(dir).split(path.sep)
  const top = parts.lastIndexOf('.mmlite')
  const dirs = [path.resolve(dir)]
  if (top > 0) for (let i = parts.length - 1; i > top; i--) dirs.push(parts.slice(0, i).join(path.sep))
  for (const d of dirs) {
    const st = await lstat(d)
    if (st.isSymbolicLink()) throw new Error(`${d} is a symbolic link; refusing to keep private files there`)
    if (typeof process.getuid === 'function' && st.uid === process.getuid() && (st.mode & 0o777) !== DIR_MODE) await chmod(d, DIR_MODE)
  }
}

let tmpCounter = 0

/** Write a whole file atomically: exclusive 0600 temp file (no links followed), fsync, rename, fsync dir. */
export async function atomicWritePrivate(file: string, content: string, opts: {privateDir?: boolean} = {}): Promise<void> {
  const dir = path.dirname(file)
  if (opts.privateDir) await privateDir(dir)
  else await mkdir(dir, {recursive: true})
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now()}-${++tmpCounter}`)
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE)
  try {
    await fh.chmod(FILE_MODE) // the umask may have taken bits away; never adds any
    await fh.writeFile(content)
    await fh.sync()
  } catch (e) {
    await fh.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw e
  }
  await fh.close()
  await rename(tmp, file)
  noteState(file, content)
  try {
    const d = await open(dir, 'r')
    await d.sync()
    await d.close()
  } catch {
    /* directory fsync is best effort */
  }
}

/** Append to a private file (created 0600, never through a symbolic link) in a 0700 directory; `sync`: fsync before returning. */
export async function appendPrivate(file: string, content: string, opts: {sync?: boolean} = {}): Promise<void> {
  await privateDir(path.dirname(file))
  const fh = await open(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, FILE_MODE)
  try {
    await fh.chmod(FILE_MODE) // a file an older version left readable to others is tightened
    await fh.writeFile(content)
    if (opts.sync) await fh.sync()
  } finally {
    await fh.close()
  }
}
