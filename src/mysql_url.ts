/** Parsing of `mysql://user:password@host:port/database` URLs. */

const DEFAULT_PORT = 3306;

/** The parts of a `mysql://` URL that the store connects with. */
export interface MysqlTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
}

/** A URL that cannot name a MySQL database; the message hides the password. */
export class InvalidMysqlUrlError extends Error {
  override name = "InvalidMysqlUrlError";
  /** The problem with the URL, without the URL itself. */
  readonly reason: string;

  constructor(url: string, reason: string) {
    super(`invalid MySQL URL ${redactPassword(url)}: ${reason}`);
    this.reason = reason;
  }
}

/**
 * Parses a `mysql://` URL; user, password and database are
 * percent-decoded. Throws InvalidMysqlUrlError.
 */
export function parseMysqlUrl(url: string): MysqlTarget {
  const invalid = (reason: string) => new InvalidMysqlUrlError(url, reason);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid("expected mysql://user:password@host:port/database");
  }
  if (parsed.protocol !== "mysql:") throw invalid("the scheme is not mysql:");
  if (parsed.hostname === "") throw invalid("the host is missing");
  if (parsed.search !== "") throw invalid("query parameters are not supported");

  let user: string, password: string, database: string;
  try {
    user = decodeURIComponent(parsed.username);
    password = decodeURIComponent(parsed.password);
    database = decodeURIComponent(parsed.pathname.slice(1));
  } catch {
    throw invalid("invalid percent-encoding");
  }
  if (database === "") throw invalid("the database name is missing");
  // The name is quoted into CREATE DATABASE, because an identifier cannot
  // be a statement parameter, so it is limited to characters that need no
  // escaping.
  if (!/^[A-Za-z0-9_$]{1,64}$/.test(database)) {
    throw invalid(
      `database name ${JSON.stringify(database)} is not ` +
        "1 to 64 letters, digits, _ or $",
    );
  }

  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: parsed.port === "" ? DEFAULT_PORT : Number(parsed.port),
    user,
    password,
    database,
  };
}

/**
 * Replaces the password of a URL with `***`, for messages and logs. When
 * the URL has no host that parses, everything before its last `@` may be a
 * password, so all of that is replaced.
 */
export function redactPassword(url: string): string {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed !== undefined && parsed.host !== "") {
    if (parsed.password === "") return url;
    const rest = `${parsed.host}${parsed.pathname}${parsed.search}`;
    return `${parsed.protocol}//${parsed.username}:***@${rest}`;
  }
  const at = url.lastIndexOf("@");
  return at < 0 ? url : "***" + url.slice(at);
}

/** Formats `host:port`, with brackets around an IPv6 host. */
export function formatServer(target: MysqlTarget): string {
  const host = target.host.includes(":") ? `[${target.host}]` : target.host;
  return `${host}:${target.port}`;
}

/** Formats `host:port/database` for logs, without user or password. */
export function describeTarget(target: MysqlTarget): string {
  return `${formatServer(target)}/${target.database}`;
}
