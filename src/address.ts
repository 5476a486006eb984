/**
 * Parsing of reverse-paths, forward-paths, domains, address literals and
 * ESMTP parameters (RFC 5321 4.1.2, 4.1.3, 4.5.3.1).
 */

/** An ESMTP parameter; the keyword is upper-cased, the value kept as sent. */
export interface EsmtpParameter {
  readonly keyword: string;
  readonly value: string | null;
}

/** The path of a MAIL or RCPT command and the ESMTP parameters after it. */
export interface PathArgument {
  /** `local-part@domain`, "" for the null reverse-path, "postmaster" alone. */
  readonly address: string;
  readonly parameters: readonly EsmtpParameter[];
}

export type ParseResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: "path" | "parameter" };

/** Parses what follows `MAIL ` (`FROM:<a@b.example> SIZE=10`). */
export function parseMailArgument(_argument: string): ParseResult<PathArgument> {
  throw new Error("not implemented");
}

/** Parses what follows `RCPT ` (`TO:<a@b.example>`). */
export function parseRcptArgument(_argument: string): ParseResult<PathArgument> {
  throw new Error("not implemented");
}

/** Reports whether the text is a HELO or EHLO argument: a domain or an address literal. */
export function isHeloArgument(_text: string): boolean {
  throw new Error("not implemented");
}
