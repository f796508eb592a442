/**
 * Secrets in broker URLs are redacted by structure, never by searching output for the password
 * (README "Brokers and URLs"): a URL is printed only through its redacted form, and the text of a
 * client library's error is scrubbed of the URL's userinfo where the driver maps that error. Event
 * data, headers, NDJSON and reports are never rewritten.
 */

/** `scheme://user:password@` → `scheme://user:***@`; `scheme://token@` → `scheme://***@`. */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@'"`]*)@/gi;

/**
 * Redacts the userinfo of every `scheme://…@` in a line of text for humans: the user name is kept
 * when a password follows it (`amqp://guest:***@…`, the README's form), a lone user part (a
 * token) is hidden whole. Only URL structure is looked at, so ordinary words are never touched.
 */
export function redactUrlsIn(text: string): string {
  return text.replace(URL_USERINFO, (_all, scheme: string, userinfo: string) => `${scheme}${redactedUserinfo(userinfo)}@`);
}

/** The printable form of a URL's raw (still percent-encoded) userinfo, without the trailing @. */
export function redactedUserinfo(rawUserinfo: string): string {
  const colon = rawUserinfo.indexOf(':');
  return colon === -1 ? '***' : `${rawUserinfo.slice(0, colon)}:***`;
}

/** What a URL holds that must never be printed: its password (or token), raw and decoded. */
export interface UrlSecrets {
  /** The userinfo exactly as written in the URL (percent-encoded), if any. */
  rawUserinfo: string | undefined;
  /** The decoded password (or NATS token). */
  password: string | undefined;
}

function secretForms(secrets: UrlSecrets): string[] {
  const forms = new Set<string>();
  const raw = secrets.rawUserinfo;
  if (raw !== undefined) {
    const colon = raw.indexOf(':');
    // The whole userinfo first (it contains the password), then the password alone.
    if (colon !== -1) {
      forms.add(raw);
      forms.add(raw.slice(colon + 1));
    } else if (secrets.password === undefined) {
      forms.add(raw);
    }
  }
  if (secrets.password !== undefined) {
    forms.add(secrets.password);
    forms.add(encodeURIComponent(secrets.password));
  }
  // A one- or two-letter password would turn ordinary words of the message into *** (clients
  // are given credentials as options and do not echo them; the structural redaction still runs).
  for (const form of forms) if (form.length < 3) forms.delete(form);
  // Longest first, so a password inside the whole userinfo does not leave the user:… prefix behind.
  return [...forms].sort((a, b) => b.length - a.length);
}

/** A URL as drivers hold it: the printable form, or the parsed URL (which can scrub as well). */
export type UrlForErrors = string | ({ redacted: string } & UrlSecrets);

/** The form to print, and what to scrub from a client's error text (structure only for a string). */
export function urlForErrors(url: UrlForErrors): { shown: string; secrets: UrlSecrets } {
  return typeof url === 'string'
    ? { shown: url, secrets: { rawUserinfo: undefined, password: undefined } }
    : { shown: url.redacted, secrets: { rawUserinfo: url.rawUserinfo, password: url.password } };
}

/**
 * Scrubs one client-library error text of this URL's userinfo: any `scheme://…@` is redacted
 * structurally, and where the client echoed the URL's password (or whole userinfo) on its own it
 * is replaced. Only for error text from a client library, never for data.
 */
export function scrubClientText(text: string, secrets: UrlSecrets): string {
  let out = redactUrlsIn(text);
  for (const form of secretForms(secrets)) {
    if (out.includes(form)) out = out.split(form).join('***');
  }
  return out;
}

/**
 * Scrubs a client error in place (message and stack, along its `cause` chain and an aggregate's
 * `errors`), so `--debug`'s stack traces of the cause cannot show the password either.
 */
export function scrubClientError(err: unknown, secrets: UrlSecrets): void {
  const seen = new Set<unknown>();
  const visit = (e: unknown, depth: number): void => {
    if (e === null || typeof e !== 'object' || seen.has(e) || depth > 8) return;
    seen.add(e);
    const rec = e as { message?: unknown; stack?: unknown; cause?: unknown; errors?: unknown };
    for (const key of ['message', 'stack'] as const) {
      const value = rec[key];
      if (typeof value === 'string') {
        const clean = scrubClientText(value, secrets);
        if (clean !== value) {
          try {
            Object.defineProperty(e, key, { value: clean, writable: true, configurable: true, enumerable: false });
          } catch {
            // A frozen error keeps its text; payq's own message about it is built from scrubbed text.
          }
        }
      }
    }
    visit(rec.cause, depth + 1);
    if (Array.isArray(rec.errors)) for (const inner of rec.errors) visit(inner, depth + 1);
  };
  visit(err, 0);
}
