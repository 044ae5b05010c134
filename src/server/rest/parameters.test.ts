import { describe, expect, it } from 'vitest';
import { BurrowError } from '../../lib/errors.js';
import { codeOf, rejectionCodeOf } from '../../../test/helpers/error-code.js';
import {
  parameterError,
  parameterErrorsOf,
  parseBooleanParam,
  parseQueryString,
  readParameters,
  verifyParameters,
  type ParameterSource,
} from './parameters.js';
import type { ParamSchema } from './route.js';

/** The BurrowError a call throws (fails the test when it does not throw one). */
function errorOf(fn: () => unknown): BurrowError {
  try {
    fn();
  } catch (error) {
    if (error instanceof BurrowError) return error;
    throw error;
  }
  throw new Error('expected a BurrowError');
}

async function rejectionOf(promise: Promise<unknown>): Promise<BurrowError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof BurrowError) return error;
    throw error;
  }
  throw new Error('expected a BurrowError');
}

describe('parseQueryString', () => {
  it('decodes + as space and %XX as UTF-8 bytes', () => {
    expect(parseQueryString('a=x+y%20z&b=%E2%82%AC&c=%2B')).toEqual({
      a: 'x y z',
      b: '€',
      c: '+',
    });
  });

  it('builds arrays from repeated keys, in order', () => {
    expect(parseQueryString('s=ok&x=1&s=error&s=warning')).toEqual({
      s: ['ok', 'error', 'warning'],
      x: '1',
    });
  });

  it('drops _dc, empty pieces, and gives keys without = an empty value', () => {
    expect(parseQueryString('_dc=1234&&flag&k=&=v')).toEqual({ flag: '', k: '', '': 'v' });
  });

  it('keeps malformed escapes literally and replaces invalid UTF-8', () => {
    expect(parseQueryString('a=%zz&b=%4&c=%ff')).toEqual({ a: '%zz', b: '%4', c: '\uFFFD' });
  });

  it('decodes names too, and a __proto__ key stays an own key', () => {
    const parsed = parseQueryString('backup%2Dtype=vm&__proto__=x');
    expect(parsed['backup-type']).toBe('vm');
    expect(Object.hasOwn(parsed, '__proto__')).toBe(true);
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
  });

  it('splits only at the first = of a piece', () => {
    expect(parseQueryString('a=b=c')).toEqual({ a: 'b=c' });
  });
});

describe('parseBooleanParam', () => {
  it('accepts PBS booleans case-insensitively', () => {
    for (const t of ['1', 'on', 'yes', 'true', 'TRUE', 'Yes', 'oN'])
      expect(parseBooleanParam(t)).toBe(true);
    for (const f of ['0', 'off', 'no', 'false', 'FALSE', 'No', 'OFF']) {
      expect(parseBooleanParam(f)).toBe(false);
    }
  });

  it('refuses other text', () => {
    for (const bad of ['', '2', 'y', 'enabled']) {
      expect(() => parseBooleanParam(bad)).toThrow('Unable to parse boolean option.');
    }
  });
});

const SCHEMA: ParamSchema = {
  store: {
    type: 'string',
    description: 'datastore',
    pattern: /^[A-Za-z0-9_][A-Za-z0-9._-]*$/,
    minLength: 3,
    maxLength: 32,
  },
  limit: { type: 'integer', description: 'limit', minimum: 0, maximum: 100, default: 50 },
  verbose: { type: 'boolean', description: 'verbose', optional: true },
  mode: { type: 'string', description: 'mode', enum: ['fast', 'slow'], optional: true },
  statusfilter: {
    type: 'array',
    description: 'states',
    items: { type: 'string', enum: ['ok', 'warning', 'error', 'unknown'] },
    maxItems: 3,
    optional: true,
  },
  ids: {
    type: 'array',
    description: 'ids',
    items: { type: 'integer', minimum: 1 },
    optional: true,
  },
};

describe('verifyParameters (strings)', () => {
  const verify = (input: Record<string, unknown>) => verifyParameters(SCHEMA, input, 'strings');
  const messageOf = (input: Record<string, unknown>) => errorOf(() => verify(input)).message;

  it('parses values by type and applies defaults', () => {
    expect(verify({ store: 'store1', verbose: 'yes', mode: 'fast' })).toEqual({
      store: 'store1',
      verbose: true,
      mode: 'fast',
      limit: 50,
    });
    expect(verify({ store: 'store1', limit: '0' })).toEqual({ store: 'store1', limit: 0 });
  });

  it('refuses unknown parameters with PBS text', () => {
    const error = errorOf(() => verify({ store: 'store1', x: '1' }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.httpStatus).toBe(400);
    expect(error.message).toBe(
      "parameter verification failed - 'x': schema does not allow additional properties.",
    );
    expect(error.details).toEqual({
      errors: { x: 'schema does not allow additional properties.' },
    });
  });

  it('does not find Object.prototype members as parameters', () => {
    expect(messageOf({ store: 'store1', toString: 'x' })).toBe(
      "parameter verification failed - 'toString': schema does not allow additional properties.",
    );
    expect(messageOf({ store: 'store1', constructor: 'x' })).toContain("'constructor'");
  });

  it('reports a missing required parameter', () => {
    expect(messageOf({})).toBe(
      "parameter verification failed - 'store': parameter is missing and it is not optional.",
    );
  });

  it('reports missing parameters only when everything given was valid (as PBS)', () => {
    expect(messageOf({ limit: '500' })).toBe(
      "parameter verification failed - 'limit': value must have a maximum value of 100 (got 500)",
    );
  });

  it('joins several problems as a list', () => {
    const error = errorOf(() => verify({ store: 'x', limit: '-1', a: '' }));
    expect(error.message).toBe(
      [
        'parameter verification failed:',
        "- 'store': value must be at least 3 characters long",
        "- 'limit': value must have a minimum value of 0 (got -1)",
        "- 'a': schema does not allow additional properties.",
      ].join('\n'),
    );
    expect(parameterErrorsOf(error)).toEqual({
      store: 'value must be at least 3 characters long',
      limit: 'value must have a minimum value of 0 (got -1)',
      a: 'schema does not allow additional properties.',
    });
  });

  it('checks string length in characters, not bytes', () => {
    // Three 4-byte characters: 3 characters long, 12 bytes, 6 UTF-16 units.
    const schema: ParamSchema = {
      s: { type: 'string', description: '', minLength: 3, maxLength: 3 },
    };
    expect(verifyParameters(schema, { s: '😀😀😀' }, 'strings')).toEqual({ s: '😀😀😀' });
    expect(errorOf(() => verifyParameters(schema, { s: 'abcd' }, 'strings')).message).toBe(
      "parameter verification failed - 's': value may only be 3 characters long",
    );
  });

  it('checks regex and enum', () => {
    expect(messageOf({ store: '-bad' })).toBe(
      "parameter verification failed - 'store': value does not match the regex pattern",
    );
    expect(messageOf({ store: 'store1', mode: 'medium' })).toBe(
      "parameter verification failed - 'mode': value 'medium' is not defined in the enumeration.",
    );
  });

  it('uses a global regex statelessly', () => {
    const schema: ParamSchema = { s: { type: 'string', description: '', pattern: /^a+$/g } };
    for (let i = 0; i < 3; i++)
      expect(verifyParameters(schema, { s: 'aaa' }, 'strings')).toEqual({ s: 'aaa' });
  });

  it('parses integers like Rust (sign, digits only) with its messages', () => {
    expect(verify({ store: 'store1', limit: '+7' }).limit).toBe(7);
    expect(verify({ store: 'store1', limit: '007' }).limit).toBe(7);
    expect(messageOf({ store: 'store1', limit: '' })).toBe(
      "parameter verification failed - 'limit': cannot parse integer from empty string",
    );
    for (const bad of ['1.5', '1e3', ' 1', '0x10', '-', '+', '12a']) {
      expect(messageOf({ store: 'store1', limit: bad })).toBe(
        "parameter verification failed - 'limit': invalid digit found in string",
      );
    }
    expect(messageOf({ store: 'store1', limit: '99999999999999999999' })).toBe(
      "parameter verification failed - 'limit': number too large to fit in target type",
    );
    expect(messageOf({ store: 'store1', limit: '-99999999999999999999' })).toBe(
      "parameter verification failed - 'limit': number too small to fit in target type",
    );
  });

  it('checks integer ranges', () => {
    expect(messageOf({ store: 'store1', limit: '101' })).toBe(
      "parameter verification failed - 'limit': value must have a maximum value of 100 (got 101)",
    );
    expect(verify({ store: 'store1', limit: '100' }).limit).toBe(100);
  });

  it('refuses bad booleans', () => {
    expect(messageOf({ store: 'store1', verbose: 'maybe' })).toBe(
      "parameter verification failed - 'verbose': Unable to parse boolean option.",
    );
  });

  it('builds arrays from repeated keys or a single value', () => {
    expect(verify({ store: 'store1', statusfilter: 'ok' }).statusfilter).toEqual(['ok']);
    expect(verify({ store: 'store1', statusfilter: ['ok', 'error'] }).statusfilter).toEqual([
      'ok',
      'error',
    ]);
    expect(verify({ store: 'store1', ids: ['1', '22'] }).ids).toEqual([1, 22]);
    expect(messageOf({ store: 'store1', ids: ['1', '0'] })).toBe(
      "parameter verification failed - 'ids': value must have a minimum value of 1 (got 0)",
    );
    expect(messageOf({ store: 'store1', statusfilter: ['ok', 'bad'] })).toBe(
      "parameter verification failed - 'statusfilter': value 'bad' is not defined in the enumeration.",
    );
    expect(messageOf({ store: 'store1', statusfilter: ['ok', 'ok', 'ok', 'ok'] })).toBe(
      "parameter verification failed - 'statusfilter': array may only contain 3 elements",
    );
  });

  it('refuses a repeated non-array parameter', () => {
    expect(messageOf({ store: ['store1', 'store2'] })).toBe(
      "parameter verification failed - 'store': duplicate parameter.",
    );
  });

  it('keeps a given value over the default', () => {
    expect(verify({ store: 'abc', limit: '5' })).toEqual({ store: 'abc', limit: 5 });
  });
});

describe('verifyParameters (json)', () => {
  const verify = (input: Record<string, unknown>) => verifyParameters(SCHEMA, input, 'json');
  const messageOf = (input: Record<string, unknown>) => errorOf(() => verify(input)).message;

  it('accepts values of the right JSON type and applies defaults', () => {
    expect(verify({ store: 'store1', verbose: false, ids: [1, 2] })).toEqual({
      store: 'store1',
      verbose: false,
      ids: [1, 2],
      limit: 50,
    });
  });

  it('refuses values of another JSON type', () => {
    expect(messageOf({ store: 'store1', limit: '5' })).toBe(
      "parameter verification failed - 'limit': Expected integer value.",
    );
    expect(messageOf({ store: 'store1', limit: 1.5 })).toBe(
      "parameter verification failed - 'limit': Expected integer value.",
    );
    expect(messageOf({ store: 'store1', verbose: 'true' })).toBe(
      "parameter verification failed - 'verbose': Expected boolean value.",
    );
    expect(messageOf({ store: 7 })).toBe(
      "parameter verification failed - 'store': Expected string value.",
    );
    expect(messageOf({ store: 'store1', ids: 1 })).toBe(
      "parameter verification failed - 'ids': Expected array - got scalar value.",
    );
    expect(messageOf({ store: 'store1', ids: { a: 1 } })).toBe(
      "parameter verification failed - 'ids': Expected array - got object.",
    );
  });

  it('names array items by index', () => {
    expect(messageOf({ store: 'store1', ids: [1, 'x', 0] })).toBe(
      [
        'parameter verification failed:',
        "- 'ids/[1]': Expected integer value.",
        "- 'ids/[2]': value must have a minimum value of 1 (got 0)",
      ].join('\n'),
    );
  });

  it('uses the JSON wording for unknown and missing properties, reporting both at once', () => {
    expect(messageOf({ x: 1 })).toBe(
      [
        'parameter verification failed:',
        "- 'x': schema does not allow additional properties",
        "- 'store': property is missing and it is not optional",
      ].join('\n'),
    );
  });

  it('treats null as a wrong value (and as missing for required ones)', () => {
    expect(messageOf({ store: null })).toBe(
      [
        'parameter verification failed:',
        "- 'store': Expected string value.",
        "- 'store': property is missing and it is not optional",
      ].join('\n'),
    );
    // details.errors keeps the first reason per name
    expect(errorOf(() => verify({ store: null })).details).toEqual({
      errors: { store: 'Expected string value.' },
    });
  });
});

describe('parameterError / parameterErrorsOf', () => {
  it('builds PBS messages for handler-side checks', () => {
    const error = parameterError([['ns', 'namespace too deep']]);
    expect(error.message).toBe("parameter verification failed - 'ns': namespace too deep");
    expect(parameterErrorsOf(error)).toEqual({ ns: 'namespace too deep' });
  });

  it('does not take other errors for parameter errors', () => {
    expect(parameterErrorsOf(new BurrowError('INVALID_ARGUMENT', 'x'))).toBeUndefined();
    expect(
      parameterErrorsOf(new BurrowError('NOT_FOUND', 'x', { details: { errors: {} } })),
    ).toBeUndefined();
    expect(parameterErrorsOf(new Error('x'))).toBeUndefined();
  });
});

describe('readParameters', () => {
  const schema: ParamSchema = {
    store: { type: 'string', description: '' },
    n: { type: 'integer', description: '', optional: true },
    flag: { type: 'boolean', description: '', optional: true },
  };
  const source = (over: Partial<ParameterSource>): ParameterSource => ({
    method: 'GET',
    query: '',
    contentType: undefined,
    body: undefined,
    raw: false,
    pathParams: {},
    ...over,
  });
  const body = (text: string) => Buffer.from(text, 'utf8');

  it('GET and DELETE read the query string only (the body is ignored)', async () => {
    for (const method of ['GET', 'DELETE']) {
      expect(
        await readParameters(
          schema,
          source({ method, query: 'n=3&_dc=1', pathParams: { store: 's1' }, body: body('x=1') }),
        ),
      ).toEqual({ store: 's1', n: 3 });
    }
  });

  it('GET refuses a path parameter repeated in the query', async () => {
    const error = await rejectionOf(
      readParameters(schema, source({ query: 'store=s2', pathParams: { store: 's1' } })),
    );
    expect(error.message).toBe("parameter verification failed - 'store': duplicate parameter.");
  });

  it('POST with JSON ignores the query string and merges path parameters', async () => {
    expect(
      await readParameters(
        schema,
        source({
          method: 'POST',
          query: 'n=1&bogus=1',
          contentType: 'application/json; charset=utf-8',
          body: body('{"n": 2, "flag": true}'),
          pathParams: { store: 's1' },
        }),
      ),
    ).toEqual({ store: 's1', n: 2, flag: true });
  });

  it('JSON: path parameters are parsed by type and win over the body', async () => {
    const s: ParamSchema = { id: { type: 'integer', description: '' } };
    expect(
      await readParameters(
        s,
        source({
          method: 'PUT',
          contentType: 'application/json',
          body: body('{"id":1}'),
          pathParams: { id: '9' },
        }),
      ),
    ).toEqual({ id: 9 });
  });

  it('JSON: an empty body is an empty parameter set', async () => {
    const error = await rejectionOf(
      readParameters(
        schema,
        source({ method: 'POST', contentType: 'application/json', body: body('') }),
      ),
    );
    expect(error.message).toBe(
      "parameter verification failed - 'store': property is missing and it is not optional",
    );
  });

  it('JSON: refuses invalid JSON and non-objects', async () => {
    const post = (text: string) =>
      readParameters(
        schema,
        source({ method: 'POST', contentType: 'application/json', body: body(text) }),
      );
    expect(await rejectionCodeOf(post('{'))).toBe('INVALID_ARGUMENT');
    expect((await rejectionOf(post('[1]'))).message).toBe('Expected object - got array.');
    expect((await rejectionOf(post('3'))).message).toBe('Expected object - got scalar value.');
    expect((await rejectionOf(post('null'))).message).toBe('Expected object - got scalar value.');
  });

  it('POST with a form body parses body and query together', async () => {
    for (const contentType of [
      undefined,
      'application/x-www-form-urlencoded',
      'Application/X-WWW-Form-Urlencoded;charset=UTF-8',
    ]) {
      expect(
        await readParameters(
          schema,
          source({ method: 'POST', query: 'flag=on', contentType, body: body('store=s+1&n=4') }),
        ),
      ).toEqual({ store: 's 1', n: 4, flag: true });
    }
  });

  it('a value in both form body and query is a duplicate', async () => {
    const error = await rejectionOf(
      readParameters(schema, source({ method: 'PUT', query: 'n=1', body: body('store=a&n=2') })),
    );
    expect(error.message).toBe("parameter verification failed - 'n': duplicate parameter.");
  });

  it('refuses other content types with 400 unsupported content type', async () => {
    const error = await rejectionOf(
      readParameters(
        schema,
        source({ method: 'POST', contentType: 'text/plain', body: body('x') }),
      ),
    );
    expect(error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect(error.httpStatus).toBe(400);
    expect(error.message).toMatch(/^unsupported content type/);
  });

  it('raw routes read the query string only, whatever the method and content type', async () => {
    expect(
      await readParameters(
        schema,
        source({
          method: 'POST',
          raw: true,
          query: 'store=s1&n=5',
          contentType: 'application/octet-stream',
          body: body('\u0000binary'),
        }),
      ),
    ).toEqual({ store: 's1', n: 5 });
  });

  it('refuses a body that is not UTF-8', async () => {
    expect(
      await rejectionCodeOf(
        readParameters(schema, source({ method: 'POST', body: Uint8Array.of(0x73, 0xff, 0xfe) })),
      ),
    ).toBe('INVALID_ARGUMENT');
  });

  it('reports failures as a rejection, never synchronously', async () => {
    let promise: Promise<unknown> | undefined;
    expect(
      codeOf(() => {
        promise = readParameters(schema, source({ method: 'POST', contentType: 'x/y' }));
      }),
    ).toBeUndefined();
    expect(await rejectionCodeOf(promise as Promise<unknown>)).toBe('UNSUPPORTED_MEDIA_TYPE');
  });
});
