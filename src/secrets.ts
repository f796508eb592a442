/**
 * Secrets seen in broker URLs. Every line payq writes (output, logs, errors, reports) passes
 * through `redact`, so a client library that echoes its connection string cannot leak a password.
 */
const secrets = new Set<string>();

export function registerSecret(secret: string): void {
  // Very short secrets would redact ordinary words; they are still never printed by payq itself.
  if (secret.length >= 3) secrets.add(secret);
}

export function redact(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:@/\s]*:)([^@/\s]*)@/gi, '$1***@');
  for (const secret of secrets) {
    if (out.includes(secret)) out = out.split(secret).join('***');
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret && out.includes(encoded)) out = out.split(encoded).join('***');
  }
  return out;
}
