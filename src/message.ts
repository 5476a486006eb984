/**
 * The trace headers prepended to each message, and the fields extracted
 * from it for the `messages` table.
 */

import PostalMime, { type Email } from "postal-mime";
import { formatDateTime, parseDateTime } from "./date_time.ts";
import { htmlToText } from "./html_text.ts";
import { describeError, log } from "./log.ts";
import { extractTopLevelFields, toLfLineEnds } from "./mime_fallback.ts";

/** The facts that the `Return-Path:` and `Received:` headers record. */
export interface TraceContext {
  readonly reversePath: string;
  readonly forwardPaths: readonly string[];
  readonly heloName: string;
  readonly clientAddress: string;
  readonly hostname: string;
  /** RFC 3848 protocol name: "SMTP" after HELO, "ESMTP" after EHLO, "ESMTPS" over TLS. */
  readonly protocol: string;
  readonly receivedAt: Date;
  /** Identifies the mail transaction in the Received: header and logs. */
  readonly transactionId: string;
}

/** Subject, Date and text body of a message. */
export interface ExtractedFields {
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
}

const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Trace headers

/** RFC 5322 2.1.1: a line SHOULD be at most 78 characters without its CRLF. */
const MAX_LINE_COLUMNS = 78;

/** Display width of a TAB at the start of a line, in columns. */
const TAB_COLUMNS = 8;

/** Builds `Return-Path:` and `Received:` as CRLF-ended header lines. */
export function buildTraceHeaders(context: TraceContext): Uint8Array {
  const reversePath = removeControlCharacters(context.reversePath);
  const returnPath = `Return-Path: <${reversePath}>`;
  const received = foldHeaderField("Received:", receivedClauses(context));
  return encoder.encode(`${returnPath}\r\n${received}\r\n`);
}

/**
 * Lists the clauses of the `Received:` field body (RFC 5321 4.4), with
 * `with` and `id` sharing one, and the date-time after the `;` as the last.
 */
function receivedClauses(context: TraceContext): string[] {
  const helo = toPrintableAscii(context.heloName);
  const addressLiteral = formatAddressLiteral(context.clientAddress);
  const protocol = toPrintableAscii(context.protocol);
  const clauses = [
    `from ${helo} (${addressLiteral})`,
    `by ${toPrintableAscii(context.hostname)} (smtpstore)`,
    `with ${protocol} id ${toPrintableAscii(context.transactionId)}`,
  ];
  if (context.forwardPaths.length === 1) {
    const forwardPath = removeControlCharacters(context.forwardPaths[0] ?? "");
    clauses.push(`for <${forwardPath}>`);
  }

  clauses[clauses.length - 1] += ";";
  clauses.push(formatDateTime(context.receivedAt));
  return clauses;
}

/**
 * Writes the field with each clause on a line of its own, the ones after
 * the first starting with a TAB. Folding only inserts CRLF before existing
 * whitespace, so unfolding (RFC 5322 2.2.3) gives back the clauses joined
 * by TAB, byte for byte.
 */
function foldHeaderField(name: string, clauses: readonly string[]): string {
  const lines = clauses.flatMap((clause, index) =>
    foldClause(index === 0 ? `${name} ${clause}` : `\t${clause}`)
  );
  return lines.join("\r\n");
}

/**
 * Folds a line longer than MAX_LINE_COLUMNS by inserting CRLF before the
 * whitespace of its fold points, filling each line as far as it goes. A
 * word longer than a line is not split, so its line is longer.
 */
function foldClause(text: string): string[] {
  const [first = "", ...words] = splitAtFoldPoints(text);
  const lines: string[] = [];
  let line = first;
  for (const word of words) {
    if (countColumns(line) + word.length > MAX_LINE_COLUMNS) {
      lines.push(line);
      line = word;
    } else {
      line += word;
    }
  }
  lines.push(line);
  return lines;
}

/**
 * Splits text before each run of SP or HTAB that has more text after it,
 * outside quoted strings and `<...>`, so each word keeps the whitespace
 * before it and a quoted local part with spaces stays whole. The first
 * character is never a fold point, so no line is only whitespace, which
 * RFC 5322 3.2.2 forbids.
 */
function splitAtFoldPoints(text: string): string[] {
  const words: string[] = [];
  let wordStart = 0;
  let inQuotes = false;
  let angleDepth = 0;
  for (let i = 1; i < text.length; i++) {
    const char = text[i];
    if (inQuotes) {
      if (char === "\\") i++;
      if (char === '"') inQuotes = false;
    } else if (char === '"') {
      inQuotes = true;
    } else if (char === "<") {
      angleDepth++;
    } else if (char === ">" && angleDepth > 0) {
      angleDepth--;
    } else if (angleDepth === 0 && isFoldPoint(text, i)) {
      words.push(text.slice(wordStart, i));
      wordStart = i;
    }
  }
  words.push(text.slice(wordStart));
  return words;
}

/** Checks for a run of SP or HTAB starting at `index` with text after it. */
function isFoldPoint(text: string, index: number): boolean {
  if (!isWhitespace(text[index]) || isWhitespace(text[index - 1])) return false;

  let end = index;
  while (isWhitespace(text[end])) end++;
  return end < text.length;
}

function isWhitespace(char: string | undefined): boolean {
  return char === " " || char === "\t";
}

/** Counts the columns of a line, with a leading TAB as TAB_COLUMNS. */
function countColumns(line: string): number {
  return line.startsWith("\t") ? TAB_COLUMNS + line.length - 1 : line.length;
}

/**
 * Replaces every character outside printable ASCII with "?", so that no
 * value can end the header line or start another one.
 */
function toPrintableAscii(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, "?");
}

/**
 * Replaces C0 and C1 control characters and DEL with "?". Other non-ASCII
 * characters stay, because an RFC 6531 (SMTPUTF8) mail transaction may
 * carry UTF-8 paths, which RFC 6532 allows in header fields.
 */
function removeControlCharacters(value: string): string {
  return value.replace(/\p{Cc}/gu, "?");
}

/** Writes an address as an RFC 5321 4.1.3 address literal. */
function formatAddressLiteral(address: string): string {
  const printable = toPrintableAscii(address);
  return printable.includes(":") ? `[IPv6:${printable}]` : `[${printable}]`;
}

// ---------------------------------------------------------------------------
// Field extraction

/** Extracts Subject, Date and text body; never throws on malformed mail. */
export async function extractFields(
  data: Uint8Array,
): Promise<ExtractedFields> {
  const message = addMissingHeaderSection(data);
  let email: Email;
  try {
    email = await PostalMime.parse(message);
  } catch (error) {
    // postal-mime 4.2.0 throws past its limits, named as it defines them:
    // - maxHeadersSize (EMAXHEADERSIZE): 2 MiB of header lines in the whole
    //   message, each line counted as at least 64 bytes.
    // - maxPartCount (EMAXPARTCOUNT): 10000 MIME parts in the whole message.
    // - maxNestingDepth (EMAXNESTINGDEPTH): 256 levels of multipart nesting.
    // - maxForwardedAddresses (EMAXFORWARDEDADDRESSES): 10000 From, To, Cc
    //   and Bcc addresses in all inline message/rfc822 parts together.
    log("warn", "message_parse_failed", { error: describeError(error) });
    return extractTopLevelFields(message);
  }

  const dateHeader = email.headers.find((header) => header.key === "date");
  return {
    subject: email.subject ?? "",
    date: dateHeader === undefined ? null : parseDateTime(dateHeader.value),
    body: extractBody(email),
  };
}

/**
 * Prepends an empty line when the first line starts with SP or HTAB. Such a
 * line continues no header field (RFC 5322 2.2.3), so the message has no
 * header section and all of it is body. postal-mime would otherwise read
 * the line as a header field and the lines after it as more header fields.
 */
function addMissingHeaderSection(data: Uint8Array): Uint8Array {
  const first = data[0];
  if (first !== 0x20 && first !== 0x09) return data;

  const prefixed = new Uint8Array(data.length + 2);
  prefixed.set([0x0d, 0x0a]);
  prefixed.set(data, 2);
  return prefixed;
}

/**
 * Returns the text/plain content, else the text of the HTML content, else
 * "", with LF line ends.
 */
function extractBody(email: Email): string {
  // NOTE: postal-mime joins all inline text/plain parts, and converts an
  // inline HTML part beside them with its own converter, which writes <li>
  // as "* " and a link as its URL in parentheses.
  if (email.text !== undefined) return toLfLineEnds(email.text);
  if (email.html !== undefined) return toLfLineEnds(htmlToText(email.html));
  return "";
}
