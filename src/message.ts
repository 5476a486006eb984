/**
 * The trace headers prepended to each message, and the fields extracted
 * from it for the `messages` table.
 */

import PostalMime, { decodeWords, type Email } from "postal-mime";
import { describeError, log } from "./log.ts";

/** What the `Return-Path:` and `Received:` headers record. */
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

const MONTH_NAMES = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
] as const;

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const;

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

/** Formats an RFC 5322 3.3 date-time in UTC: `Mon, 01 Jan 2024 09:30:00 +0000`. */
function formatDateTime(date: Date): string {
  const pad = (value: number): string => String(value).padStart(2, "0");
  const dayName = DAY_NAMES[date.getUTCDay()];
  const day = pad(date.getUTCDate());
  const month = MONTH_NAMES[date.getUTCMonth()];
  const year = String(date.getUTCFullYear()).padStart(4, "0");
  const time = [date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()]
    .map(pad)
    .join(":");
  return `${dayName}, ${day} ${month} ${year} ${time} +0000`;
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
    // postal-mime 4.2.0 throws past its limits: 2 MiB of header lines, each
    // counted as at least 64 bytes, 10000 parts or 256 levels of nesting.
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

/** Replaces CRLF and any bare CR with LF. */
function toLfLineEnds(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

// ---------------------------------------------------------------------------
// Fields without postal-mime

/** The top-level header fields that extractTopLevelFields reads. */
const TOP_LEVEL_FIELD_NAMES = new Set([
  "subject",
  "date",
  "content-type",
  "content-transfer-encoding",
]);

/** The top-level header fields of a message, unfolded, and its body. */
interface TopLevelPart {
  readonly fields: ReadonlyMap<string, string>;
  readonly body: Uint8Array;
}

/**
 * Extracts Subject and Date from the top-level header section, and the body
 * when the message is one text/plain or text/html part. Every step is one
 * pass over the bytes, so the time is linear in the message size.
 */
function extractTopLevelFields(data: Uint8Array): ExtractedFields {
  const part = readTopLevelPart(data);
  const subject = part.fields.get("subject");
  const date = part.fields.get("date");
  return {
    subject: subject === undefined ? "" : decodeWords(subject),
    date: date === undefined ? null : parseDateTime(date),
    body: extractTopLevelBody(part),
  };
}

/**
 * Splits the message at the end of its header section: an empty line, or a
 * line that neither starts a field nor continues one, which then starts the
 * body. The first occurrence of each field in TOP_LEVEL_FIELD_NAMES is kept.
 */
function readTopLevelPart(data: Uint8Array): TopLevelPart {
  const fields = new Map<string, string>();
  let field: FieldLines | null = null;
  let start = 0;
  while (start < data.length) {
    const newline = data.indexOf(0x0a, start);
    const end = newline < 0 ? data.length : newline + 1;
    const line = removeLineEnd(data.subarray(start, end));
    if (line[0] === 0x20 || line[0] === 0x09) {
      field?.lines.push(line);
    } else {
      addField(fields, field);
      if (line.length === 0) return { fields, body: data.subarray(end) };

      const name = readFieldName(line);
      if (name === null) return { fields, body: data.subarray(start) };

      const isKept = TOP_LEVEL_FIELD_NAMES.has(name) && !fields.has(name);
      field = isKept ? { name, lines: [line] } : null;
    }
    start = end;
  }

  addField(fields, field);
  return { fields, body: data.subarray(data.length) };
}

/** The lines of one header field, without their line ends. */
interface FieldLines {
  readonly name: string;
  readonly lines: Uint8Array[];
}

function addField(fields: Map<string, string>, field: FieldLines | null): void {
  if (field !== null) fields.set(field.name, unfoldFieldBody(field.lines));
}

/** Removes the LF or CRLF that ends a line. */
function removeLineEnd(line: Uint8Array): Uint8Array {
  let end = line.length;
  if (line[end - 1] === 0x0a) end--;
  if (line[end - 1] === 0x0d) end--;
  return line.subarray(0, end);
}

/**
 * Returns the lower-case name of the field that the line starts, "" for an
 * mbox `From ` line, or null when the line starts no field. As postal-mime
 * 4.2.0 reads it, the name is printable ASCII without ":", and SP or HTAB
 * may come between it and the colon.
 */
function readFieldName(line: Uint8Array): string | null {
  let nameEnd = 0;
  while (nameEnd < line.length && isFieldNameByte(line[nameEnd])) nameEnd++;
  let colon = nameEnd;
  while (line[colon] === 0x20 || line[colon] === 0x09) colon++;
  if (line[colon] === 0x3a) {
    return windows1252.decode(line.subarray(0, colon)).toLowerCase();
  }

  const isMboxFrom = windows1252.decode(line.subarray(0, 5)) === "From ";
  return isMboxFrom ? "" : null;
}

function isFieldNameByte(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x21 && byte <= 0x7e && byte !== 0x3a;
}

/**
 * Joins a field's lines, which removes the CRLF of each fold and keeps its
 * whitespace, and returns the text after the colon without the SP and HTAB
 * around it.
 */
function unfoldFieldBody(lines: readonly Uint8Array[]): string {
  const unfolded = lines.map(decodeHeaderLine).join("");
  const value = unfolded.slice(unfolded.indexOf(":") + 1);
  return trimWhitespace(value.replace(/[\r\n]+/g, " "));
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decodes a header line as UTF-8 (RFC 6532), or as windows-1252 when it is
 * not valid UTF-8, as postal-mime 4.2.0 does for raw 8-bit header text.
 */
function decodeHeaderLine(line: Uint8Array): string {
  try {
    return strictUtf8.decode(line);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return windows1252.decode(line);
  }
}

/** Removes leading and trailing SP and HTAB, and no other whitespace. */
function trimWhitespace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isWhitespace(text[start])) start++;
  while (end > start && isWhitespace(text[end - 1])) end--;
  return text.slice(start, end);
}

/**
 * Decodes the body by the top-level Content-Transfer-Encoding and charset
 * when the Content-Type is text/plain, text/html or missing.
 */
function extractTopLevelBody(part: TopLevelPart): string {
  const contentType = parseContentType(part.fields.get("content-type"));
  const isHtml = contentType.mediaType === "text/html";
  // NOTE: a multipart or non-text message past postal-mime's limits gets an
  // empty body, because this fallback reads no MIME parts.
  if (contentType.mediaType !== "text/plain" && !isHtml) return "";

  const encoding = part.fields.get("content-transfer-encoding");
  const bytes = decodeTransferEncoding(part.body, encoding);
  const text = decodeCharset(bytes, contentType.charset);
  return toLfLineEnds(isHtml ? htmlToText(text) : text);
}

interface ContentType {
  /** Lower-case `type/subtype`. */
  readonly mediaType: string;
  readonly charset: string | undefined;
}

/**
 * Parses a Content-Type field body. A missing value, or one without a
 * `/`, is text/plain (RFC 2045 5.2).
 */
function parseContentType(value: string | undefined): ContentType {
  const [type = "", ...parameters] = (value ?? "").split(";");
  const mediaType = trimWhitespace(type).toLowerCase();
  let charset: string | undefined;
  for (const parameter of parameters) {
    const equals = parameter.indexOf("=");
    const name = trimWhitespace(parameter.slice(0, equals)).toLowerCase();
    if (equals >= 0 && name === "charset") {
      charset = trimWhitespace(parameter.slice(equals + 1)).replace(/"/g, "");
      break;
    }
  }
  return {
    mediaType: mediaType.includes("/") ? mediaType : "text/plain",
    charset,
  };
}

/**
 * Decodes base64 and quoted-printable, and returns the bytes of any other
 * Content-Transfer-Encoding as they are.
 */
function decodeTransferEncoding(
  bytes: Uint8Array,
  encoding: string | undefined,
): Uint8Array {
  const mechanism = trimWhitespace(encoding ?? "").toLowerCase();
  if (mechanism === "base64") return decodeBase64(bytes);
  if (mechanism === "quoted-printable") return decodeQuotedPrintable(bytes);
  return bytes;
}

/** The value of each base64 character by its byte, -1 for other bytes. */
const BASE64_VALUES = (() => {
  const alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const values = new Int8Array(256).fill(-1);
  for (let i = 0; i < alphabet.length; i++) values[alphabet.charCodeAt(i)] = i;
  return values;
})();

/**
 * Decodes base64, skipping line breaks, padding and every other byte outside
 * the alphabet. Bits left over at the end that make no whole byte are
 * dropped, so truncated input keeps the bytes it has.
 */
function decodeBase64(bytes: Uint8Array): Uint8Array {
  const output = new Uint8Array(Math.ceil((bytes.length * 3) / 4));
  let length = 0;
  let buffer = 0;
  let bitCount = 0;
  for (const byte of bytes) {
    const value = BASE64_VALUES[byte] ?? -1;
    if (value < 0) continue;

    buffer = ((buffer << 6) | value) & 0xffff;
    bitCount += 6;
    if (bitCount >= 8) {
      bitCount -= 8;
      output[length++] = (buffer >> bitCount) & 0xff;
    }
  }
  return output.subarray(0, length);
}

/**
 * Decodes quoted-printable (RFC 2045 6.7): `=` and two hex digits is a byte,
 * `=` at the end of a line is a soft line break, and any other `=` stays.
 */
function decodeQuotedPrintable(bytes: Uint8Array): Uint8Array {
  const output = new Uint8Array(bytes.length);
  let length = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] ?? 0;
    const high = hexDigitValue(bytes[i + 1]);
    const low = hexDigitValue(bytes[i + 2]);
    if (byte !== 0x3d) {
      output[length++] = byte;
    } else if (high >= 0 && low >= 0) {
      output[length++] = high * 16 + low;
      i += 2;
    } else if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) {
      i += 2;
    } else if (bytes[i + 1] === 0x0a) {
      i += 1;
    } else {
      output[length++] = byte;
    }
  }
  return output.subarray(0, length);
}

/** Returns the value of an ASCII hex digit, or -1 for any other byte. */
function hexDigitValue(byte: number | undefined): number {
  if (byte === undefined) return -1;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

const utf8 = new TextDecoder();

/**
 * Decodes text in the charset that the label names, or as UTF-8 with
 * U+FFFD for invalid bytes when the label is missing or unknown.
 */
function decodeCharset(bytes: Uint8Array, charset: string | undefined): string {
  if (charset === undefined || charset === "") return utf8.decode(bytes);
  try {
    return new TextDecoder(charset).decode(bytes);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return utf8.decode(bytes);
  }
}

// ---------------------------------------------------------------------------
// RFC 5322 date-time

/**
 * RFC 5322 3.3 and 4.3 date-time, after comments are removed: optional
 * day-of-week, day, month name, year of 2 to 4 digits, hh:mm[:ss], and an
 * optional zone.
 */
const DATE_TIME_PATTERN = new RegExp(
  "^(?:([a-z]{3})\\s*,\\s*)?" + // day-of-week
    "(\\d{1,2})\\s+([a-z]{3})\\s+(\\d{2,4})\\s+" + // day month year
    "(\\d{1,2})\\s*:\\s*(\\d{2})(?:\\s*:\\s*(\\d{2}))?" + // hh:mm[:ss]
    "(?:\\s*([+-]\\d{4}|[a-z]{1,5}))?$", // zone
  "i",
);

/** RFC 5322 4.3 obsolete zone names, as minutes east of UTC. */
const ZONE_OFFSETS: Readonly<Record<string, number>> = {
  ut: 0,
  gmt: 0,
  edt: -4 * 60,
  est: -5 * 60,
  cdt: -5 * 60,
  cst: -6 * 60,
  mdt: -6 * 60,
  mst: -7 * 60,
  pdt: -7 * 60,
  pst: -8 * 60,
};

/** Parses an RFC 5322 date-time, or returns null when the value is not one. */
function parseDateTime(value: string): Date | null {
  const text = removeComments(value);
  const match = text === null ? null : DATE_TIME_PATTERN.exec(text.trim());
  if (match === null) return null;

  const [, dayName, day, monthName, year, hour, minute, second, zone] = match;
  if (dayName !== undefined && !isDayName(dayName)) return null;

  const month = MONTH_NAMES.findIndex((name) =>
    name.toLowerCase() === monthName?.toLowerCase()
  );
  const fullYear = expandYear(year ?? "");
  const offset = parseZone(zone);
  const fields = {
    year: fullYear,
    month,
    day: Number(day),
    hour: Number(hour),
    minute: Number(minute),
    second: Number(second ?? "0"),
  };
  if (offset === null || !isValidDateTime(fields)) return null;

  const utc = Date.UTC(
    fields.year,
    fields.month,
    fields.day,
    fields.hour,
    fields.minute,
    fields.second,
  );
  return new Date(utc - offset * 60_000);
}

function isDayName(name: string): boolean {
  return DAY_NAMES.some((day) => day.toLowerCase() === name.toLowerCase());
}

/**
 * Expands an obsolete year (RFC 5322 4.3): 2000 is added to a 2-digit year
 * below 50, and 1900 to one of 50 or more and to any 3-digit year.
 */
function expandYear(digits: string): number {
  const year = Number(digits);
  if (digits.length === 2) return year < 50 ? 2000 + year : 1900 + year;
  if (digits.length === 3) return 1900 + year;
  return year;
}

/**
 * Returns the zone as minutes east of UTC, or null when it is invalid. No
 * zone is taken as UTC. Military letters and other unknown names count as
 * "-0000" (RFC 5322 4.3), which gives the time in UTC.
 */
function parseZone(zone: string | undefined): number | null {
  if (zone === undefined) return 0;

  const numeric = /^([+-])(\d{2})(\d{2})$/.exec(zone);
  if (numeric === null) return ZONE_OFFSETS[zone.toLowerCase()] ?? 0;

  const [, sign, hours, minutes] = numeric;
  if (Number(minutes) > 59) return null;
  const offset = Number(hours) * 60 + Number(minutes);
  return sign === "-" ? -offset : offset;
}

interface DateTimeFields {
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
}

/**
 * Checks the ranges of RFC 5322 3.3. A leap second (60) is allowed, and
 * Date.UTC carries it into the next minute.
 */
function isValidDateTime(fields: DateTimeFields): boolean {
  // RFC 5322 3.3: the year is 1900 or later.
  if (fields.month < 0 || fields.year < 1900) return false;

  const daysInMonth = new Date(Date.UTC(fields.year, fields.month + 1, 0))
    .getUTCDate();
  return fields.day >= 1 && fields.day <= daysInMonth &&
    fields.hour <= 23 && fields.minute <= 59 && fields.second <= 60;
}

/**
 * Replaces each RFC 5322 3.2.2 comment, nested ones included, with a space.
 * Returns null when a parenthesis is left open.
 */
function removeComments(value: string): string | null {
  let result = "";
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const char = value[i];
    if (depth > 0 && char === "\\") {
      i++;
    } else if (char === "(") {
      depth++;
    } else if (char === ")" && depth > 0) {
      depth--;
      if (depth === 0) result += " ";
    } else if (depth === 0) {
      result += char;
    }
  }
  return depth === 0 ? result : null;
}

// ---------------------------------------------------------------------------
// HTML to text

/** Elements whose content is not shown as text. */
const HIDDEN_ELEMENTS = new Set(["script", "style", "title", "template"]);

/** Elements that start and end a line. */
const BLOCK_ELEMENTS = new Set([
  "address",
  "article",
  "aside",
  "blockquote",
  "dd",
  "div",
  "dl",
  "dt",
  "fieldset",
  "figure",
  "footer",
  "form",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "header",
  "hr",
  "li",
  "main",
  "nav",
  "ol",
  "p",
  "pre",
  "section",
  "table",
  "tr",
  "ul",
]);

/** Table cells, whose contents are separated by a space. */
const CELL_ELEMENTS = new Set(["td", "th"]);

const TAG_START = /<(\/?)([a-z][a-z0-9-]*)/iy;

/**
 * Converts HTML to plain text: tags removed, entities decoded, block
 * elements and `<br>` as line breaks, the content of script, style, title
 * and template dropped, whitespace collapsed outside `<pre>`. Every search
 * moves the position past the text it covered, so the time is linear in the
 * length of the HTML.
 */
function htmlToText(html: string): string {
  const builder = new PlainTextBuilder();
  let position = 0;
  while (position < html.length) {
    const tagStart = html.indexOf("<", position);
    const textEnd = tagStart < 0 ? html.length : tagStart;
    builder.addText(html.slice(position, textEnd));
    if (tagStart < 0) break;

    position = readMarkup(html, tagStart, builder);
  }
  return builder.toString();
}

/**
 * Reads the comment, declaration or tag that starts at `start` and returns
 * the position after it. A `<` that starts none of them is text.
 */
function readMarkup(
  html: string,
  start: number,
  builder: PlainTextBuilder,
): number {
  if (html.startsWith("<!--", start)) {
    return positionAfter(html, "-->", start + 4);
  }
  const next = html[start + 1];
  if (next === "!" || next === "?") return positionAfter(html, ">", start);

  TAG_START.lastIndex = start;
  const match = TAG_START.exec(html);
  if (match === null) {
    builder.addText("<");
    return start + 1;
  }

  const tagEnd = positionAfter(html, ">", start);
  const isEndTag = match[1] === "/";
  const name = (match[2] ?? "").toLowerCase();
  if (!isEndTag && HIDDEN_ELEMENTS.has(name)) {
    return skipElementContent(html, name, tagEnd);
  }

  builder.handleTag(name, isEndTag);
  return tagEnd;
}

/** Returns the position after the next `text` from `from`, or the end. */
function positionAfter(html: string, text: string, from: number): number {
  const found = html.indexOf(text, from);
  return found < 0 ? html.length : found + text.length;
}

/** Returns the position after the end tag of `name`, or the end. */
function skipElementContent(html: string, name: string, from: number): number {
  const endTag = new RegExp(`</${name}\\b`, "ig");
  endTag.lastIndex = from;
  const found = endTag.exec(html);
  return found === null ? html.length : positionAfter(html, ">", found.index);
}

/** Collects the lines of text that htmlToText produces. */
class PlainTextBuilder {
  #lines: string[] = [];
  #line = "";
  #spacePending = false;
  #preDepth = 0;

  addText(html: string): void {
    if (html === "") return;
    if (this.#preDepth > 0) {
      this.#addPreformatted(html);
      return;
    }

    let text = html.replace(/[\t\n\f\r ]+/g, " ");
    if (text.startsWith(" ")) {
      this.#spacePending = true;
      text = text.slice(1);
    }
    if (text === "") return;

    const endsWithSpace = text.endsWith(" ");
    if (endsWithSpace) text = text.slice(0, -1);
    if (this.#spacePending && this.#line !== "") this.#line += " ";
    this.#line += decodeHtmlEntities(text);
    this.#spacePending = endsWithSpace;
  }

  handleTag(name: string, isEndTag: boolean): void {
    if (name === "br") {
      this.#endLine();
    } else if (BLOCK_ELEMENTS.has(name)) {
      if (this.#line !== "") this.#endLine();
      this.#spacePending = false;
      if (name === "pre") {
        this.#preDepth = Math.max(0, this.#preDepth + (isEndTag ? -1 : 1));
      }
    } else if (CELL_ELEMENTS.has(name)) {
      this.#spacePending = true;
    }
  }

  /** Returns the lines joined with LF, without leading or trailing empty lines. */
  toString(): string {
    const lines = [...this.#lines, this.#line];
    let first = 0;
    let last = lines.length;
    while (first < last && lines[first] === "") first++;
    while (last > first && lines[last - 1] === "") last--;
    return lines.slice(first, last).join("\n");
  }

  #addPreformatted(html: string): void {
    const lines = decodeHtmlEntities(html).replace(/\r\n?/g, "\n").split("\n");
    lines.forEach((line, index) => {
      if (index > 0) this.#endLine();
      if (this.#spacePending && this.#line !== "") this.#line += " ";
      this.#spacePending = false;
      this.#line += line;
    });
  }

  #endLine(): void {
    this.#lines.push(this.#line);
    this.#line = "";
    this.#spacePending = false;
  }
}

/** HTML 4 Latin-1 entity names, for U+00A0 to U+00FF in order. */
const LATIN1_ENTITY_NAMES = (
  "nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not " +
  "shy reg macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 " +
  "ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml " +
  "Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml " +
  "ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute " +
  "Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring " +
  "aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth " +
  "ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute " +
  "ucirc uuml yacute thorn yuml"
).split(" ");

/**
 * Named character references: the XML five, HTML 4 Latin-1 and the
 * punctuation and symbols that mail commonly uses.
 */
const NAMED_ENTITIES: ReadonlyMap<string, string> = new Map([
  ...LATIN1_ENTITY_NAMES.map((name, index): [string, string] => [
    name,
    String.fromCharCode(0xa0 + index),
  ]),
  ...Object.entries({
    amp: "&",
    lt: "<",
    gt: ">",
    quot: '"',
    apos: "'",
    OElig: "\u0152",
    oelig: "\u0153",
    Scaron: "\u0160",
    scaron: "\u0161",
    Yuml: "\u0178",
    fnof: "\u0192",
    circ: "\u02c6",
    tilde: "\u02dc",
    ensp: "\u2002",
    emsp: "\u2003",
    thinsp: "\u2009",
    zwnj: "\u200c",
    zwj: "\u200d",
    lrm: "\u200e",
    rlm: "\u200f",
    ndash: "\u2013",
    mdash: "\u2014",
    lsquo: "\u2018",
    rsquo: "\u2019",
    sbquo: "\u201a",
    ldquo: "\u201c",
    rdquo: "\u201d",
    bdquo: "\u201e",
    dagger: "\u2020",
    Dagger: "\u2021",
    bull: "\u2022",
    hellip: "\u2026",
    permil: "\u2030",
    prime: "\u2032",
    Prime: "\u2033",
    lsaquo: "\u2039",
    rsaquo: "\u203a",
    oline: "\u203e",
    euro: "\u20ac",
    trade: "\u2122",
    larr: "\u2190",
    uarr: "\u2191",
    rarr: "\u2192",
    darr: "\u2193",
    harr: "\u2194",
    minus: "\u2212",
  }),
]);

const CHARACTER_REFERENCE =
  /&(?:#(\d+)|#[xX]([0-9a-fA-F]+)|([A-Za-z]\w*))(;?)/g;

const windows1252 = new TextDecoder("windows-1252");

/**
 * Decodes character references. A named one needs its ";", a numeric one
 * does not.
 */
function decodeHtmlEntities(text: string): string {
  if (!text.includes("&")) return text;

  // NOTE: named references outside NAMED_ENTITIES (Greek letters, math
  // symbols and the rest of the HTML5 list) stay as written.
  return text.replace(
    CHARACTER_REFERENCE,
    (reference, decimal, hex, name, semicolon) => {
      if (decimal !== undefined) return decodeCodePoint(parseInt(decimal, 10));
      if (hex !== undefined) return decodeCodePoint(parseInt(hex, 16));
      if (semicolon !== ";") return reference;
      return NAMED_ENTITIES.get(name) ?? reference;
    },
  );
}

/**
 * Decodes a numeric character reference. NUL, surrogates and values past
 * U+10FFFF become U+FFFD, and 0x80 to 0x9F are read as windows-1252 bytes.
 */
function decodeCodePoint(codePoint: number): string {
  const isSurrogate = codePoint >= 0xd800 && codePoint <= 0xdfff;
  if (codePoint === 0 || codePoint > 0x10ffff || isSurrogate) return "\ufffd";
  if (codePoint >= 0x80 && codePoint <= 0x9f) {
    return windows1252.decode(Uint8Array.of(codePoint));
  }
  return String.fromCodePoint(codePoint);
}
