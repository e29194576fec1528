import assert from 'node:assert/strict'
import {maskTypedDsn} from '../../src/db/redact.js'
import {runWizard} from '../../src/ui/wizard.js'
import type {Prompts} from '../../src/ui/prompts.js'

describe('secrets: what the terminal shows of a typed DSN', () => {
  it('masks the password while it is typed, in every form', () => {
    assert.equal(maskTypedDsn('postgresql://admin:hunt'), 'postgresql://admin:****')
    assert.equal(maskTypedDsn('postgresql://admin:hunter2@db:5432/shop'), 'postgresql://admin:*******@db:5432/shop')
    assert.equal(maskTypedDsn('host=db user=a password=hunter2 dbname=x'), 'host=db user=a password=******* dbname=x')
    assert.equal(maskTypedDsn("host=db password='it\\'s'"), 'host=db password=*******')
    assert.equal(maskTypedDsn('postgresql://a@db/x?sslmode=require&password=hunter2'), 'postgresql://a@db/x?sslmode=require&password=*******')
    assert.equal(maskTypedDsn('postgresql://a@db/x'), 'postgresql://a@db/x')
  })

  it('the wizard asks for DSNs through a masking transformer', async () => {
    const shown: string[] = []
    const prompts: Prompts = {
      async input(o) {
        if (/DSN/.test(o.message)) {
          assert.ok(o.transformer, 'DSN prompt without a transformer')
          shown.push(o.transformer('postgresql://admin:hunter2@127.0.0.1:1/x', {isFinal: true}))
          throw new Error('stop here')
        }
        return 'shop'
      },
      confirm: async () => true,
      checkbox: async () => [],
      select: async o => o.choices[0].value,
    }
    await assert.rejects(runWizard('/nonexistent/mmlite.yaml', prompts, () => {}), /stop here/)
    assert.deepEqual(shown, ['postgresql://admin:*******@127.0.0.1:1/x'])
  })
})
