/**
 * Subject, Date and body read from the top-level header section and body
 * without postal-mime, for messages past its limits.
 */

import { decodeWords } from "postal-mime";
import { parseDateTime } from "./date_time.ts";
import { htmlToText } from "./html_text.ts";

const windows1252 = new TextDecoder("windows-1252");

/** Subject, Date and text body, as the message module returns them. */
export interface TopLevelFields {
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
}

/** Replaces CRLF and any bare CR with LF. */
export function toLfLineEnds(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

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
export function extractTopLevelFields(data: Uint8Array): TopLevelFields {
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

function isWhitespace(char: string | undefined): boolean {
  return char === " " || char === "\t";
}
