/**
 * Parsing of reverse-paths, forward-paths, domains, address literals and
 * ESMTP parameters (RFC 5321 4.1.2, 4.1.3, 4.5.3.1).
 *
 * Every check walks the text once, character by character, and uses no
 * regular expression, so hostile input cannot make it backtrack.
 */

/** An ESMTP parameter; the keyword is upper-cased, the value kept as sent. */
export interface EsmtpParameter {
  readonly keyword: string;
  readonly value: string | null;
}

/** The path of a MAIL or RCPT command and the ESMTP parameters after it. */
export interface PathArgument {
  /**
   * `local-part@domain` with the local part in canonical form, so spellings
   * that differ only in quoting come out equal: unquoted when its content
   * is a dot-string (`"a.b"@x.example` becomes `a.b@x.example`), else
   * quoted with a backslash only before `"` and `\`. "" for the null
   * reverse-path, and `postmaster` alone as sent.
   */
  readonly address: string;
  readonly parameters: readonly EsmtpParameter[];
}

export type ParseResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: "path" | "parameter" };

// RFC 5321 4.5.3.1.1 to 4.5.3.1.3, in octets.
const MAX_LOCAL_PART_OCTETS = 64;
const MAX_DOMAIN_OCTETS = 255;
const MAX_PATH_OCTETS = 256;
// RFC 1035 2.3.4.
const MAX_LABEL_OCTETS = 63;

const HYPHEN = 0x2d;
const EQUALS = 0x3d;
const BACKSLASH = 0x5c;
const DOUBLE_QUOTE = 0x22;
// RFC 5322 3.2.3: the symbols that atext allows beside letters and digits.
const ATEXT_SYMBOLS = "!#$%&'*+-/=?^_`{|}~";

const PATH_ERROR = { ok: false, error: "path" } as const;
const PARAMETER_ERROR = { ok: false, error: "parameter" } as const;

type PathKind = "reverse-path" | "forward-path";

/** Parses what follows `MAIL ` (`FROM:<a@b.example> SIZE=10`). */
export function parseMailArgument(
  argument: string,
): ParseResult<PathArgument> {
  return parsePathArgument(argument, "FROM:", "reverse-path");
}

/** Parses what follows `RCPT ` (`TO:<a@b.example>`). */
export function parseRcptArgument(
  argument: string,
): ParseResult<PathArgument> {
  return parsePathArgument(argument, "TO:", "forward-path");
}

/**
 * Reports whether the text is a HELO or EHLO argument: a domain or an
 * address literal.
 */
export function isHeloArgument(text: string): boolean {
  return isDomain(text) || isAddressLiteral(text);
}

function parsePathArgument(
  argument: string,
  prefix: string,
  kind: PathKind,
): ParseResult<PathArgument> {
  const head = argument.slice(0, prefix.length);
  if (head.toUpperCase() !== prefix) return PATH_ERROR;

  let start = prefix.length;
  while (argument[start] === " ") start++;
  const end = findPathEnd(argument, start);
  if (end < 0) return PATH_ERROR;
  const address = parsePath(argument.slice(start, end), kind);
  if (address === null) return PATH_ERROR;

  const parameters = parseParameters(argument.slice(end));
  if (parameters === null) return PARAMETER_ERROR;

  return { ok: true, value: { address, parameters } };
}

/**
 * Returns the index just past the path that starts at `start`, or -1 when
 * a path in angle brackets is not closed or is followed by anything but a
 * space. A quoted local part may contain `>` and spaces, so quoted strings
 * are skipped.
 */
function findPathEnd(text: string, start: number): number {
  const bracketed = text[start] === "<";
  let quoted = false;
  for (let i = start; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char === "\\") i++;
      else if (char === '"') quoted = false;
    } else if (char === '"') {
      quoted = true;
    } else if (bracketed && char === ">") {
      const next = text[i + 1];
      return next === undefined || next === " " ? i + 1 : -1;
    } else if (!bracketed && char === " ") {
      return i;
    }
  }
  return bracketed ? -1 : text.length;
}

/**
 * Returns the address in a path with or without its angle brackets, in
 * canonical form, or null when the path is invalid.
 */
function parsePath(path: string, kind: PathKind): string | null {
  const bracketed = path.startsWith("<") && path.endsWith(">") &&
    path.length >= 2;
  const inner = bracketed ? path.slice(1, -1) : path;
  // A path sent without brackets is counted as if it had them.
  if (inner.length + 2 > MAX_PATH_OCTETS) return null;

  if (inner === "") {
    return bracketed && kind === "reverse-path" ? "" : null;
  }
  // RFC 5321 4.5.1: "<Postmaster>" needs no domain and is case-insensitive.
  if (kind === "forward-path" && inner.toLowerCase() === "postmaster") {
    return inner;
  }

  const mailbox = skipSourceRoute(inner);
  return mailbox === null ? null : parseMailbox(mailbox);
}

/**
 * Returns the mailbox after a source route (`@a.example,@b.example:`), or
 * the text unchanged when it has none. Source routes are obsolete, so the
 * route is checked and dropped. Returns null for an invalid route.
 */
function skipSourceRoute(text: string): string | null {
  if (!text.startsWith("@")) return text;

  // A route contains no colon, so the first one ends it.
  const colon = text.indexOf(":");
  if (colon < 0) return null;
  const hops = text.slice(0, colon).split(",");
  for (const hop of hops) {
    if (!hop.startsWith("@") || !isDomain(hop.slice(1))) return null;
  }
  return text.slice(colon + 1);
}

/**
 * Returns the mailbox with its local part in canonical form, or null when
 * the mailbox is invalid.
 */
function parseMailbox(text: string): string | null {
  // A domain never contains "@", but a quoted local part may.
  const at = text.lastIndexOf("@");
  if (at < 0) return null;
  const domain = text.slice(at + 1);
  if (!isDomain(domain) && !isAddressLiteral(domain)) return null;

  const localPart = canonicalizeLocalPart(text.slice(0, at));
  return localPart === null ? null : `${localPart}@${domain}`;
}

/**
 * Rewrites an RFC 5321 Local-part (Dot-string or Quoted-string) in its
 * canonical form, or returns null when it is invalid. RFC 5321 4.1.2 treats
 * all quoted forms as equivalent and recommends the minimum quoting. So the
 * quotes are removed when the content is a dot-string (`"a.b"` becomes
 * `a.b`), and otherwise only `"` and `\` keep a backslash (`"a\ b"` becomes
 * `"a b"`).
 */
function canonicalizeLocalPart(text: string): string | null {
  // RFC 5321 4.5.3.1.1: at most 64 octets, counted here as sent, with its
  // quotes and backslashes.
  if (text.length === 0 || text.length > MAX_LOCAL_PART_OCTETS) return null;
  if (!text.startsWith('"')) return isDotString(text) ? text : null;

  const content = unquoteString(text);
  if (content === null) return null;
  return isDotString(content) ? content : quoteString(content);
}

function isDotString(text: string): boolean {
  for (const atom of text.split(".")) {
    if (atom.length === 0) return false;
    for (let i = 0; i < atom.length; i++) {
      if (!isAtext(atom.charCodeAt(i))) return false;
    }
  }
  return true;
}

/**
 * Unquotes an RFC 5321 Quoted-string of qtextSMTP and quoted-pairSMTP,
 * replacing each quoted pair (`\x`) by its character. Returns null when the
 * Quoted-string is invalid.
 */
function unquoteString(text: string): string | null {
  const last = text.length - 1;
  if (last < 1 || text[0] !== '"' || text[last] !== '"') return null;
  let content = "";
  for (let i = 1; i < last; i++) {
    let code = text.charCodeAt(i);
    if (code === BACKSLASH) {
      i++;
      // The closing quote cannot be the escaped character.
      if (i >= last) return null;
      code = text.charCodeAt(i);
    } else if (code === DOUBLE_QUOTE) {
      return null;
    }
    if (!isPrintable(code)) return null;
    content += text[i];
  }
  return content;
}

/** Writes content as a Quoted-string, escaping only `"` and `\`. */
function quoteString(content: string): string {
  let quoted = '"';
  for (const char of content) {
    if (char === '"' || char === "\\") quoted += "\\";
    quoted += char;
  }
  return quoted + '"';
}

/**
 * Checks an RFC 5321 Domain: dot-separated labels of letters, digits and
 * hyphens that neither start nor end with a hyphen, with no trailing dot.
 */
function isDomain(text: string): boolean {
  if (text.length === 0 || text.length > MAX_DOMAIN_OCTETS) return false;
  return text.split(".").every(isLabel);
}

function isLabel(label: string): boolean {
  const last = label.length - 1;
  if (last < 0 || label.length > MAX_LABEL_OCTETS) return false;
  if (label[0] === "-" || label[last] === "-") return false;
  for (let i = 0; i <= last; i++) {
    const code = label.charCodeAt(i);
    if (!isLetterOrDigit(code) && code !== HYPHEN) return false;
  }
  return true;
}

/**
 * Checks an RFC 5321 address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]`
 * with the tag in any case. A General-address-literal with any other tag
 * is rejected, because no other tag is registered.
 */
function isAddressLiteral(text: string): boolean {
  if (!text.startsWith("[") || !text.endsWith("]")) return false;
  const inner = text.slice(1, -1);
  const tag = "IPV6:";
  if (inner.slice(0, tag.length).toUpperCase() === tag) {
    return isIpv6Address(inner.slice(tag.length));
  }
  return isDottedQuad(inner);
}

/** Checks four RFC 5321 Snum values, each 1 to 3 digits from 0 to 255. */
function isDottedQuad(text: string): boolean {
  const parts = text.split(".");
  if (parts.length !== 4) return false;
  return parts.every((part) => {
    if (part.length === 0 || part.length > 3) return false;
    for (let i = 0; i < part.length; i++) {
      if (!isDigit(part.charCodeAt(i))) return false;
    }
    return Number(part) <= 255;
  });
}

/**
 * Checks an IPv6 address: eight groups of 1 to 4 hex digits, or fewer
 * around one "::", and optionally a dotted quad as the last two groups.
 */
function isIpv6Address(text: string): boolean {
  const gap = text.indexOf("::");
  if (gap < 0) return countIpv6Groups(text, true) === 8;

  // A second "::" or a ":::" leaves an empty group in the tail.
  const head = text.slice(0, gap);
  const tail = text.slice(gap + 2);
  const headGroups = head === "" ? 0 : countIpv6Groups(head, false);
  const tailGroups = tail === "" ? 0 : countIpv6Groups(tail, true);
  if (headGroups < 0 || tailGroups < 0) return false;
  // NOTE: RFC 5321 4.1.3 allows at most 6 groups beside "::". RFC 4291 2.2
  // lets "::" replace a single zero group, and RFC 5952 asks receivers to
  // accept any RFC 4291 form, so 7 are accepted here.
  return headGroups + tailGroups <= 7;
}

/**
 * Returns how many 16-bit groups a colon-separated run contains, a trailing
 * dotted quad counting as two, or -1 when a group is invalid.
 */
function countIpv6Groups(text: string, allowDottedQuad: boolean): number {
  const groups = text.split(":");
  let count = 0;
  for (const [index, group] of groups.entries()) {
    const isLast = index === groups.length - 1;
    if (allowDottedQuad && isLast && group.includes(".")) {
      if (!isDottedQuad(group)) return -1;
      count += 2;
    } else if (isHexGroup(group)) {
      count += 1;
    } else {
      return -1;
    }
  }
  return count;
}

function isHexGroup(text: string): boolean {
  if (text.length === 0 || text.length > 4) return false;
  for (let i = 0; i < text.length; i++) {
    if (!isHexDigit(text.charCodeAt(i))) return false;
  }
  return true;
}

/**
 * Parses the ESMTP parameters after a path: space-separated
 * `keyword[=value]` (RFC 5321 4.1.2). Returns null on a syntax error. The
 * keyword and value are not judged here, so unknown ones pass.
 */
function parseParameters(text: string): EsmtpParameter[] | null {
  const parameters: EsmtpParameter[] = [];
  for (const token of text.split(" ")) {
    if (token === "") continue;
    const parameter = parseParameter(token);
    if (parameter === null) return null;
    parameters.push(parameter);
  }
  return parameters;
}

function parseParameter(token: string): EsmtpParameter | null {
  const equals = token.indexOf("=");
  const keyword = equals < 0 ? token : token.slice(0, equals);
  const value = equals < 0 ? null : token.slice(equals + 1);
  if (!isParameterKeyword(keyword)) return null;
  if (value !== null && !isParameterValue(value)) return null;
  return { keyword: keyword.toUpperCase(), value };
}

/** Checks esmtp-keyword: ALPHA or DIGIT, then ALPHA, DIGIT or "-". */
function isParameterKeyword(text: string): boolean {
  if (text.length === 0 || !isLetterOrDigit(text.charCodeAt(0))) {
    return false;
  }
  for (let i = 1; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (!isLetterOrDigit(code) && code !== HYPHEN) return false;
  }
  return true;
}

/** Checks esmtp-value: one or more of %d33-60 and %d62-126. */
function isParameterValue(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 33 || code > 126 || code === EQUALS) return false;
  }
  return true;
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

function isLetter(code: number): boolean {
  const lower = code | 0x20;
  return lower >= 0x61 && lower <= 0x7a;
}

function isLetterOrDigit(code: number): boolean {
  return isLetter(code) || isDigit(code);
}

function isHexDigit(code: number): boolean {
  const lower = code | 0x20;
  return isDigit(code) || (lower >= 0x61 && lower <= 0x66);
}

function isAtext(code: number): boolean {
  if (isLetterOrDigit(code)) return true;
  return code < 0x80 && ATEXT_SYMBOLS.includes(String.fromCharCode(code));
}

/** Reports whether the code is printable ASCII, space included (%d32-126). */
function isPrintable(code: number): boolean {
  return code >= 32 && code <= 126;
}
