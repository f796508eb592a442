/**
 * Broker passwords from outside the command line (README "TLS and SASL"): `--password-file FILE`
 * (or `PAYQ_PASSWORD_FILE`), then `PAYQ_PASSWORD`, for the user the broker URL names — so a CI
 * secret never sits in `ps` output or a shell history. A password file readable by everyone is
 * refused.
 */
import { readFileSync, statSync } from 'node:fs';
import { ConfigError, UsageError } from '../errors.js';

export interface PasswordSource {
  password: string;
  /** Where it came from, for messages (never the password). */
  from: string;
  /** Given on purpose for this command (a flag), not inherited from the environment. */
  explicit: boolean;
}

function readPasswordFile(file: string, from: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${from} ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? 'unreadable')}`);
  }
  if ((mode & 0o170000) !== 0o100000) throw new ConfigError(`${from} ${file}: not a regular file`);
  if ((mode & 0o004) !== 0) {
    throw new ConfigError(`${from} ${file} is readable by everyone (mode ${(mode & 0o777).toString(8)}): a password file must not be`, { hint: `chmod 600 ${file}` });
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${from} ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  const password = text.replace(/\r?\n$/, '');
  if (password === '') throw new ConfigError(`${from} ${file} is empty`);
  if (/[\r\n]/.test(password)) throw new ConfigError(`${from} ${file} holds more than one line`);
  return password;
}

export function passwordSource(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): PasswordSource | undefined {
  const flagFile = flags['passwordFile'];
  if (typeof flagFile === 'string') return { password: readPasswordFile(flagFile, '--password-file'), from: '--password-file', explicit: true };
  const envFile = env['PAYQ_PASSWORD_FILE'];
  if (envFile) return { password: readPasswordFile(envFile, 'PAYQ_PASSWORD_FILE'), from: 'PAYQ_PASSWORD_FILE', explicit: false };
  const password = env['PAYQ_PASSWORD'];
  if (password) return { password, from: 'PAYQ_PASSWORD', explicit: false };
  return undefined;
}

/**
 * The broker URL with the password put in for its user. A URL that names no user, or has a
 * password of its own, keeps what it has — unless the password was asked for with a flag, which
 * is then a usage error (it would silently do nothing).
 */
export function withPassword(url: string, source: PasswordSource | undefined): string {
  if (!source) return url;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  if (!scheme) return url; // parseBrokerUrl says what is wrong
  const rest = url.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const at = authority.lastIndexOf('@');
  if (at === -1) {
    if (source.explicit) throw new UsageError(`${source.from} needs a user in the broker URL to go with it`, { hint: 'name the user before an @ in the URL, as in user@host:port' });
    return url;
  }
  const userinfo = authority.slice(0, at);
  if (userinfo.includes(':')) {
    if (source.explicit) throw new UsageError(`the broker URL has a password already and ${source.from} gives another: give it in one place`);
    return url;
  }
  return `${scheme[0]}${userinfo}:${encodeURIComponent(source.password)}@${rest.slice(at + 1)}`;
}
